"""Build the metadata documents that a METS manifest wraps: DIM, MODS, PREMIS,
METSRights and DSPACE-ROLES.

Every builder takes plain records and returns an lxml element, with children in
a fixed order so that the same records always give the same bytes.
"""
from __future__ import annotations

import re

from lxml import etree

from aip.mets import namespaces as ns
from aip.mets.model import DimValue, PolicyRecord, PremisRecord, RolesRecord

# Characters XML 1.0 does not allow; DSpace drops them from metadata values as well.
_INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

MODS_SCHEMA_URL = "http://www.loc.gov/standards/mods/v3/mods-3-1.xsd"


def xml_text(value: str | None) -> str:
    """Return ``value`` without the characters that XML 1.0 cannot carry."""
    return _INVALID_XML_CHARS.sub("", value or "")


def _element(parent: etree._Element | None, tag: str, attributes: dict | None = None, text: str | None = None):
    if parent is None:
        element = etree.Element(tag, nsmap=None)
    else:
        element = etree.SubElement(parent, tag)
    for name, value in (attributes or {}).items():
        if value is not None:
            element.set(name, value)
    if text is not None:
        element.text = xml_text(text)
    return element


def build_dim(values: list[DimValue], *, object_type: str) -> etree._Element:
    """Build a ``dim:dim`` element with one ``dim:field`` per value, in the given order."""
    root = etree.Element(f"{{{ns.DIM}}}dim", nsmap={"dim": ns.DIM})
    root.set("dspaceType", object_type)
    for value in values:
        attributes = {"mdschema": value.schema, "element": value.element, "qualifier": value.qualifier}
        attributes["lang"] = value.language or None
        if value.authority:
            attributes["authority"] = value.authority
            attributes["confidence"] = ns.WORD_BY_CONFIDENCE.get(value.confidence, "UNSET")
        _element(root, f"{{{ns.DIM}}}field", attributes, value.value)
    return root


# dc field -> how it appears in MODS: (path of MODS elements, attributes of the last one).
_MODS_PATHS: dict[tuple[str, str | None], tuple[tuple[str, ...], dict[str, str]]] = {
    ("title", None): (("titleInfo", "title"), {}),
    ("title", "alternative"): (("titleInfo", "title"), {}),
    ("description", "abstract"): (("abstract",), {}),
    ("description", "tableofcontents"): (("tableOfContents",), {}),
    ("description", None): (("note",), {}),
    ("description", "provenance"): (("note",), {"type": "provenance"}),
    ("date", "issued"): (("originInfo", "dateIssued"), {"encoding": "iso8601"}),
    ("date", "created"): (("originInfo", "dateCreated"), {"encoding": "iso8601"}),
    ("publisher", None): (("originInfo", "publisher"), {}),
    ("subject", None): (("subject", "topic"), {}),
    ("type", None): (("genre",), {}),
    ("rights", None): (("accessCondition",), {"type": "useAndReproduction"}),
    ("relation", "ispartofseries"): (("relatedItem", "titleInfo", "title"), {}),
    ("language", None): (("language", "languageTerm"), {}),
    ("language", "iso"): (("language", "languageTerm"), {"authority": "rfc3066"}),
}


def build_mods(values: list[DimValue]) -> etree._Element:
    """Build a MODS 3.1 record from the Dublin Core values, for interoperability only.

    Ingest reads DIM whenever a package has it, so fields without a MODS mapping
    are left out here and lose nothing.
    """
    root = etree.Element(f"{{{ns.MODS}}}mods", nsmap={"mods": ns.MODS, "xsi": ns.XSI})
    root.set(f"{{{ns.XSI}}}schemaLocation", f"{ns.MODS} {MODS_SCHEMA_URL}")
    for value in values:
        if value.schema != "dc":
            continue
        _add_mods_value(root, value)
    return root


def _add_mods_value(root: etree._Element, value: DimValue) -> None:
    if value.element in ("contributor", "creator"):
        name = _element(root, f"{{{ns.MODS}}}name")
        if value.qualifier:
            role = _element(name, f"{{{ns.MODS}}}role")
            _element(role, f"{{{ns.MODS}}}roleTerm", {"type": "text"}, value.qualifier)
        _element(name, f"{{{ns.MODS}}}namePart", None, value.value)
        return
    if value.element == "identifier":
        _element(root, f"{{{ns.MODS}}}identifier", {"type": value.qualifier or "local"}, value.value)
        return
    mapping = _MODS_PATHS.get((value.element, value.qualifier))
    if mapping is None:
        return
    path, attributes = mapping
    parent = root
    for tag in path[:-1]:
        parent = _element(parent, f"{{{ns.MODS}}}{tag}")
    _element(parent, f"{{{ns.MODS}}}{path[-1]}", attributes, value.value)


def build_premis(record: PremisRecord, *, identifier_url: str) -> etree._Element:
    """Build the PREMIS 1.0 object description of one bitstream."""
    premis = etree.Element(f"{{{ns.PREMIS}}}premis", nsmap={"premis": ns.PREMIS})
    tag = lambda name: f"{{{ns.PREMIS}}}{name}"  # noqa: E731
    obj = _element(premis, tag("object"))
    identifier = _element(obj, tag("objectIdentifier"))
    _element(identifier, tag("objectIdentifierType"), None, "URL")
    _element(identifier, tag("objectIdentifierValue"), None, identifier_url)
    _element(obj, tag("objectCategory"), None, "File")
    characteristics = _element(obj, tag("objectCharacteristics"))
    if record.digest:
        fixity = _element(characteristics, tag("fixity"))
        _element(fixity, tag("messageDigestAlgorithm"), None, record.digest_algorithm or "MD5")
        _element(fixity, tag("messageDigest"), None, record.digest)
    _element(characteristics, tag("size"), None, str(record.size or 0))
    format_element = _element(characteristics, tag("format"))
    designation = _element(format_element, tag("formatDesignation"))
    _element(designation, tag("formatName"), None, record.format_name or "application/octet-stream")
    if record.original_name:
        _element(obj, tag("originalName"), None, record.original_name)
    return premis


def build_metsrights(policies: list[PolicyRecord]) -> etree._Element:
    """Build a METSRights declaration with one ``Context`` per resource policy.

    DSpace's ``in-effect`` attribute is left out because it depends on the day of
    the export, which would change the package of an unchanged object.
    """
    root = etree.Element(f"{{{ns.METSRIGHTS}}}RightsDeclarationMD", nsmap={"rights": ns.METSRIGHTS})
    root.set("RIGHTSCATEGORY", "LICENSED")
    for policy in policies:
        _add_rights_context(root, policy)
    return root


def _add_rights_context(root: etree._Element, policy: PolicyRecord) -> None:
    tag = lambda name: f"{{{ns.METSRIGHTS}}}{name}"  # noqa: E731
    context = _element(root, tag("Context"))
    if policy.name:
        context.set("rpName", xml_text(policy.name))
    if policy.start_date:
        context.set("start-date", policy.start_date.isoformat())
    if policy.end_date:
        context.set("end-date", policy.end_date.isoformat())
    context.set("CONTEXTCLASS", policy.context_class)
    if policy.context_class == ns.MANAGED_GRP:
        _element(context, tag("UserName"), {"USERTYPE": "GROUP"}, policy.group_name)
    elif policy.context_class == ns.ACADEMIC_USER:
        _element(context, tag("UserName"), {"USERTYPE": "INDIVIDUAL"}, policy.eperson_email)
    _element(context, tag("Permissions"), ns.PERMISSIONS_BY_ACTION.get(policy.action, {}))
    if policy.description:
        constraints = _element(
            context, tag("Constraints"), {"CONSTRAINTTYPE": "OTHER", "OTHERCONSTRAINTTYPE": ns.POLICY_DESCRIPTION_CONSTRAINT}
        )
        _element(constraints, tag("ConstraintDescription"), None, policy.description)


def build_roles(roles: RolesRecord) -> etree._Element:
    """Build DSPACE-ROLES: groups with their members, then people.

    The elements are written in the METS default namespace, which is how the
    unprefixed elements of DSpace's own AIPs parse. ``Member`` and ``MemberGroup``
    carry only the email or group name, the keys that DSpace's reader matches on.
    """
    root = etree.Element(f"{{{ns.METS}}}DSpaceRoles")
    groups = _element(root, f"{{{ns.METS}}}Groups")
    for group in roles.groups:
        _add_group(groups, group)
    if roles.people:
        people = _element(root, f"{{{ns.METS}}}People")
        for person in roles.people:
            _add_person(people, person)
    return root


def _add_group(parent: etree._Element, group) -> None:
    tag = lambda name: f"{{{ns.METS}}}{name}"  # noqa: E731
    element = _element(parent, tag("Group"), {"ID": group.id, "Name": group.name, "Type": group.type})
    if group.member_emails:
        members = _element(element, tag("Members"))
        for email in group.member_emails:
            _element(members, tag("Member"), {"Name": email})
    if group.member_group_names:
        member_groups = _element(element, tag("MemberGroups"))
        for name in group.member_group_names:
            _element(member_groups, tag("MemberGroup"), {"Name": name})


def _add_person(parent: etree._Element, person) -> None:
    tag = lambda name: f"{{{ns.METS}}}{name}"  # noqa: E731
    element = _element(parent, tag("Person"), {"ID": person.id})
    for name, value in (
        ("Email", person.email),
        ("Netid", person.netid),
        ("FirstName", person.first_name),
        ("LastName", person.last_name),
        ("Language", person.language),
    ):
        if value:
            _element(element, tag(name), None, value)
    if person.password_hash:
        attributes = {"digest": person.password_digest_algorithm or None, "salt": person.password_salt or None}
        _element(element, tag("PasswordHash"), attributes, person.password_hash)
    for name, flag in (
        ("CanLogin", person.can_log_in),
        ("RequireCertificate", person.require_certificate),
        ("SelfRegistered", person.self_registered),
    ):
        if flag:
            _element(element, tag(name))
