"""Read one AIP's mets.xml into a ``PackageManifest``.

``read_manifest`` works in these steps:

1. Parse the bytes with the hardened parser of ``xmlsafe``.
2. Check the root element and ``PROFILE``, then read ``TYPE``, the handle
   (``OBJID``), the UUID (``ID``) and ``metsHdr@LASTMODDATE``.
3. Index the ``ID`` of every dmdSec, amdSec, metadata section and file, so that
   ``DMDID``, ``ADMID`` and ``FILEID`` references resolve. A reference to a
   missing ID raises ``InvalidPackageError``.
4. Read the fileSec into one ``BundleRecord`` per fileGrp, apart from a
   container's LOGO group, which becomes the logo.
5. Read the first structMap ("DSpace Object"): descriptive sections, the
   object's admin metadata, child packages, the collection item template, and
   the primary bitstream (items) or logo (containers).
6. Read the "Parent" structMap.

Namespace URIs and code tables come from ``aip.mets.namespaces``. Every error
names the package (``source``) and the offending element or value.
``choose_descriptive`` applies DSpace's rule for picking the dmdSec to ingest,
and ``mods_to_dim`` maps MODS to DIM values when no DIM is present.
"""
from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone

from lxml import etree

from aip.errors import InvalidPackageError, UnsafePackageError
from aip.mets import namespaces as ns
from aip.mets.model import (
    AdminMetadata,
    BundleRecord,
    ChildReference,
    DescriptiveMetadata,
    DimValue,
    FileRecord,
    GroupRecord,
    PackageManifest,
    PersonRecord,
    PolicyRecord,
    PremisRecord,
    RolesRecord,
)
from aip.mets.xmlsafe import parse_xml

XLINK_HREF = f"{{{ns.XLINK}}}href"

# fileGrp@USE values that DSpace's ingester renames before creating the bundle.
BUNDLE_ALIASES = {"CONTENT": "ORIGINAL", "MANIFESTMD": "METADATA"}
LOGO_GROUP = "LOGO"

# rightsMD stream sections of an item: licence files referenced by mdRef.
LICENSE_TYPES = {name.upper(): name for name in ("DSpaceDepositLicense", "CreativeCommonsRDF", "CreativeCommonsText")}

ADMIN_SECTION_TAGS = ("techMD", "rightsMD", "sourceMD", "digiprovMD")

DIGITS_PATTERN = re.compile(r"[0-9]+")
# A URI scheme ("file:", "http:") or a drive letter ("C:"): an href that names something other than a zip entry.
SCHEME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _mets(name: str) -> str:
    return f"{{{ns.METS}}}{name}"


@dataclass
class _Document:
    """One manifest being read: its package name for messages and its elements by ID."""

    source: str
    elements_by_id: dict[str, etree._Element]

    def error(self, message: str) -> InvalidPackageError:
        return InvalidPackageError(f"{self.source}: {message}")

    def resolve(self, element: etree._Element, attribute: str, kinds: tuple[str, ...]) -> list[etree._Element]:
        """Return the elements named by the IDREFS ``attribute`` of ``element``, in order."""
        resolved = []
        for reference in (element.get(attribute) or "").split():
            target = self.elements_by_id.get(reference)
            if target is None:
                raise self.error(
                    f"{_describe(element)} {attribute} references ID {reference!r}, which is not in the manifest."
                )
            if _local_name(target) not in kinds:
                raise self.error(
                    f"{_describe(element)} {attribute} must reference {' or '.join(kinds)} elements, "
                    f"but {reference!r} is the ID of an element named {_local_name(target)}."
                )
            resolved.append(target)
        return resolved


# --- public API ---------------------------------------------------------------------------


def read_manifest(data: bytes, *, source: str) -> PackageManifest:
    """Parse the mets.xml bytes of the package named ``source``.

    Raises ``InvalidPackageError`` for anything that is not a readable DSpace AIP
    manifest, and ``UnsafePackageError`` for XML that attacks the parser.
    """
    root = parse_xml(data, source=source)
    if root.tag != _mets("mets"):
        raise InvalidPackageError(f"{source}: the root element is {root.tag!r}, expected the METS element 'mets'.")
    document = _Document(source, _index_ids(root, source))
    _check_hrefs(root, source)
    profile = _read_profile(root, document)
    object_type = _read_object_type(root, document)

    # A container's LOGO fileGrp is its logo. An item keeps a LOGO fileGrp as an ordinary bundle, as DSpace does.
    file_groups = _read_file_groups(root, document)
    is_container = object_type != "ITEM"
    logo_groups = [group for group in file_groups if is_container and group.name == LOGO_GROUP]
    bundles = [group for group in file_groups if not any(group is logo for logo in logo_groups)]

    object_div = _read_object_div(root, document)
    fptr_id = _read_direct_fptr(object_div, document)

    return PackageManifest(
        object_type=object_type,
        handle=_read_handle(root),
        uuid=_read_uuid(root),
        profile=profile,
        last_modified=_read_last_modified(root, document),
        parent_handle=_read_parent_handle(root),
        descriptive=_read_descriptive_refs(object_div, document),
        admin=_read_admin_refs(object_div, document),
        bundles=bundles,
        primary_file_id=None if is_container else fptr_id,
        logo=_select_logo(logo_groups, fptr_id, file_groups) if is_container else None,
        children=_read_children(object_div, document),
        template_descriptive=_read_template(object_div, document),
    )


def choose_descriptive(
    sections: list[DescriptiveMetadata], preferred: str | None, *, source: str = "package"
) -> list[DescriptiveMetadata]:
    """Pick the dmdSecs to ingest, as DSpace's AIP ingester does.

    The chosen section is the first whose type equals ``preferred`` (case-insensitive),
    else the first DIM, else the first MODS, else the first section. Only that one is
    ingested, because each crosswalk adds values and two would duplicate them. The
    exception is the other sections sharing its GROUPID, which are returned with it
    in their manifest order.
    """
    if not sections:
        raise InvalidPackageError(f"{source}: the object has no descriptive metadata (no dmdSec in div DMDID).")

    chosen = None
    for md_type in (preferred, "DIM", "MODS"):
        if md_type:
            chosen = next((section for section in sections if section.md_type.upper() == md_type.upper()), None)
        if chosen is not None:
            break
    if chosen is None:
        chosen = sections[0]

    if chosen.group_id is None:
        return [chosen]
    return [section for section in sections if section is chosen or section.group_id == chosen.group_id]


def mods_to_dim(mods_xml: bytes) -> list[DimValue]:
    """Map a ``mods:mods`` document to Dublin Core DIM values, in document order.

    This is a fallback for packages without a DIM dmdSec. It inverts the default
    ``mods.properties`` table of DSpace for the common fields. Other MODS elements
    and empty values are dropped.
    """
    root = parse_xml(mods_xml, source="MODS section")
    values: list[DimValue] = []
    for element in root:
        if not isinstance(element.tag, str) or etree.QName(element).namespace != ns.MODS:
            continue
        values.extend(_map_mods_element(element))
    return [value for value in values if value.value.strip()]


# --- document structure -------------------------------------------------------------------


def _index_ids(root: etree._Element, source: str) -> dict[str, etree._Element]:
    """Map each ID of a dmdSec, amdSec, metadata section, fileGrp and file to its element.

    Only these METS elements are indexed, because embedded metadata may carry
    ``ID`` attributes of its own (DSPACE-ROLES does), which are not METS IDs.
    """
    candidates: list[etree._Element] = []
    candidates.extend(root.findall(_mets("dmdSec")))
    for amd_sec in root.findall(_mets("amdSec")):
        candidates.append(amd_sec)
        candidates.extend(_admin_sections(amd_sec))
    for file_sec in root.findall(_mets("fileSec")):
        candidates.extend(file_sec.iter(_mets("fileGrp"), _mets("file")))

    elements_by_id: dict[str, etree._Element] = {}
    for element in candidates:
        element_id = element.get("ID")
        if element_id is None:
            continue
        if element_id in elements_by_id:
            raise InvalidPackageError(f"{source}: the ID {element_id!r} is used by more than one element.")
        elements_by_id[element_id] = element
    return elements_by_id


def _check_hrefs(root: etree._Element, source: str) -> None:
    """Reject URL hrefs of files, metadata references and child packages that leave the package.

    File and metadata hrefs name zip entries, and child package hrefs name files in the
    folder of the package, so none may be absolute, climb with "..", or carry a scheme.
    """
    for element in root.iter(_mets("FLocat"), _mets("mdRef"), _mets("mptr")):
        href = _href_or_none(element)
        if href is None or _loctype(element) != "URL":
            continue
        parts = href.replace("\\", "/").split("/")
        outside = (
            href.startswith(("/", "\\")) or ".." in parts or "\x00" in href or SCHEME_PATTERN.match(href) is not None
        )
        if _local_name(element) == "mptr":
            # A child package is a file beside its parent, so even a plain subfolder is outside.
            if outside or len(parts) != 1:
                raise UnsafePackageError(f"Package {source} references a child outside its folder: {href!r}.")
        elif outside:
            raise UnsafePackageError(
                f"Package {source}: {_describe(element)} references {href!r}, which is outside the package. "
                "File references must name entries of the package."
            )


def _read_profile(root: etree._Element, document: _Document) -> str:
    profile = root.get("PROFILE")
    if profile != ns.PROFILE:
        raise document.error(
            f"mets PROFILE is {profile!r}, but a DSpace AIP must have PROFILE {ns.PROFILE!r}. "
            "The package is not a DSpace AIP."
        )
    return profile


def _read_object_type(root: etree._Element, document: _Document) -> str:
    type_attribute = root.get("TYPE")
    object_type = _parse_type(type_attribute)
    if object_type is None:
        raise document.error(
            f"mets TYPE is {type_attribute!r}, expected 'DSpace ' followed by one of {', '.join(ns.OBJECT_TYPES)}."
        )
    return object_type


def _parse_type(type_attribute: str | None) -> str | None:
    """Return the object type of a ``TYPE`` value such as "DSpace ITEM", or None if unknown."""
    if type_attribute is None:
        return None
    word = type_attribute.strip()
    if word.upper().startswith(ns.TYPE_PREFIX.upper()):
        word = word[len(ns.TYPE_PREFIX):].strip()
    word = word.upper()
    return word if word in ns.OBJECT_TYPES else None


def _read_handle(root: etree._Element) -> str | None:
    object_id = (root.get("OBJID") or "").strip()
    if object_id.lower().startswith("hdl:") and len(object_id) > 4:
        return object_id[4:]
    return None


def _read_uuid(root: etree._Element) -> str | None:
    """Return the UUID that DSpace 7.1+ writes after the last "DB-ID-" of mets@ID, in canonical form."""
    mets_id = root.get("ID") or ""
    marker = mets_id.rfind("DB-ID-")
    if marker < 0:
        return None
    candidate = mets_id[marker + len("DB-ID-"):]
    if not UUID_PATTERN.fullmatch(candidate):
        return None
    return str(uuid.UUID(candidate))


def _read_last_modified(root: etree._Element, document: _Document) -> datetime | None:
    """Parse metsHdr@LASTMODDATE as an aware UTC datetime.

    DSpace writes ``YYYY-MM-DDTHH:MM:SS`` without a zone; a value with a
    fraction or a zone offset is accepted too.
    """
    header = root.find(_mets("metsHdr"))
    value = header.get("LASTMODDATE") if header is not None else None
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise document.error(f"metsHdr LASTMODDATE {value!r} is not an ISO 8601 date and time.") from None
    # NOTE: DSpace renders a zone-less LASTMODDATE in the exporting JVM's local time zone,
    # which the package does not record, so a naive value is taken to be UTC.
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _read_object_div(root: etree._Element, document: _Document) -> etree._Element:
    """Return div0, the top div of the "DSpace Object" structMap (else of the first structMap)."""
    struct_maps = root.findall(_mets("structMap"))
    if not struct_maps:
        raise document.error("the manifest has no structMap.")
    labelled = [struct_map for struct_map in struct_maps if (struct_map.get("LABEL") or "").lower() == "dspace object"]
    struct_map = (labelled or struct_maps)[0]
    div = struct_map.find(_mets("div"))
    if div is None:
        raise document.error(f"{_describe(struct_map)} has no div.")
    return div


def _read_parent_handle(root: etree._Element) -> str | None:
    for struct_map in root.findall(_mets("structMap")):
        if (struct_map.get("LABEL") or "").lower() != "parent":
            continue
        div = struct_map.find(_mets("div"))
        mptr = div.find(_mets("mptr")) if div is not None else None
        href = mptr.get(XLINK_HREF) if mptr is not None else None
        return href.strip() if href and href.strip() else None
    return None


def _read_direct_fptr(object_div: etree._Element, document: _Document) -> str | None:
    """Return the FILEID of the first fptr directly under div0 (primary bitstream or logo)."""
    fptr = object_div.find(_mets("fptr"))
    if fptr is None:
        return None
    files = document.resolve(fptr, "FILEID", ("file",))
    return files[0].get("ID") if files else None


def _read_children(object_div: etree._Element, document: _Document) -> list[ChildReference]:
    """Read a child package reference from every URL mptr of every child div, in document order."""
    children = []
    for div in object_div.findall(_mets("div")):
        if _is_template_div(div):
            continue
        urls = [mptr for mptr in div.findall(_mets("mptr")) if _loctype(mptr) == "URL"]
        if not urls:
            continue
        object_type = _parse_type(div.get("TYPE"))
        if object_type is None or object_type == "SITE":
            raise document.error(f"{_describe(div)} TYPE {div.get('TYPE')!r} is not a community, collection or item.")
        handles = [mptr for mptr in div.findall(_mets("mptr")) if _loctype(mptr) == "HANDLE"]
        handle = _href_or_none(handles[0]) if handles else None
        children.extend(ChildReference(object_type=object_type, href=_href_or_none(url), handle=handle) for url in urls)
    return children


def _is_template_div(div: etree._Element) -> bool:
    # Same test as DSpace's ingester, which is case-sensitive.
    div_type = div.get("TYPE") or ""
    return "ITEM" in div_type and div_type.endswith(" Template")


def _read_template(object_div: etree._Element, document: _Document) -> list[DescriptiveMetadata] | None:
    for div in object_div.findall(_mets("div")):
        if _is_template_div(div):
            return _read_descriptive_refs(div, document)
    return None


# --- fileSec ------------------------------------------------------------------------------


def _read_file_groups(root: etree._Element, document: _Document) -> list[BundleRecord]:
    groups = []
    for file_sec in root.findall(_mets("fileSec")):
        for file_group in file_sec.iter(_mets("fileGrp")):
            groups.append(_read_file_group(file_group, document))
    return groups


def _read_file_group(file_group: etree._Element, document: _Document) -> BundleRecord:
    use = (file_group.get("USE") or "").strip()
    if not use:
        raise document.error(f"{_describe(file_group)} has no USE attribute, which names the bundle.")
    return BundleRecord(
        name=BUNDLE_ALIASES.get(use, use),
        files=[_read_file(element, document) for element in file_group.findall(_mets("file"))],
        admin=_read_admin_refs(file_group, document),
    )


def _read_file(element: etree._Element, document: _Document) -> FileRecord:
    file_id = element.get("ID")
    if not file_id:
        raise document.error("a file element has no ID.")
    return FileRecord(
        id=file_id,
        href=_read_file_location(element, file_id, document),
        mimetype=element.get("MIMETYPE"),
        sequence_id=_int_attribute(element, "SEQ", document),
        size=_int_attribute(element, "SIZE", document),
        checksum=element.get("CHECKSUM"),
        checksum_type=element.get("CHECKSUMTYPE"),
        group_id=element.get("GROUPID"),
        admin=_read_admin_refs(element, document),
    )


def _read_file_location(element: etree._Element, file_id: str, document: _Document) -> str:
    """Return the zip entry name of a file: the xlink:href of its URL FLocat."""
    if element.find(_mets("FContent")) is not None:
        raise document.error(f"file {file_id!r} embeds its content in FContent, but an AIP must use FLocat.")
    locations = element.findall(_mets("FLocat"))
    if not locations:
        raise document.error(f"file {file_id!r} has no FLocat, so its content cannot be found.")
    for location in locations:
        if _loctype(location) == "URL" and _href_or_none(location):
            return _href_or_none(location)
    raise document.error(f"file {file_id!r} has no FLocat with LOCTYPE 'URL' and an xlink:href.")


def _select_logo(
    logo_groups: list[BundleRecord], fptr_id: str | None, file_groups: list[BundleRecord]
) -> FileRecord | None:
    """Return the file that div0's fptr names, else the first file of the LOGO group."""
    if fptr_id is not None:
        for group in file_groups:
            for file_record in group.files:
                if file_record.id == fptr_id:
                    return file_record
    for group in logo_groups:
        if group.files:
            return group.files[0]
    return None


# --- dmdSec -------------------------------------------------------------------------------


def _read_descriptive_refs(div: etree._Element, document: _Document) -> list[DescriptiveMetadata]:
    return [_read_dmd_sec(dmd_sec, document) for dmd_sec in document.resolve(div, "DMDID", ("dmdSec",))]


def _read_dmd_sec(dmd_sec: etree._Element, document: _Document) -> DescriptiveMetadata:
    wrap = _md_wrap_or_ref(dmd_sec)
    if wrap is None:
        raise document.error(f"{_describe(dmd_sec)} has neither mdWrap nor mdRef.")
    md_type = _md_type(wrap)
    group_id = dmd_sec.get("GROUPID")
    xml_data = wrap.find(_mets("xmlData"))

    if md_type == "DIM":
        dim = _read_dim_fields(xml_data, dmd_sec, document) if xml_data is not None else []
        return DescriptiveMetadata("DIM", dim=dim, group_id=group_id)
    if md_type == "MODS":
        mods = xml_data.find(f"{{{ns.MODS}}}mods") if xml_data is not None else None
        return DescriptiveMetadata("MODS", mods_xml=_serialize_mods(mods), group_id=group_id)
    return DescriptiveMetadata(_md_label(wrap), group_id=group_id)


def _serialize_mods(mods: etree._Element | None) -> bytes | None:
    """Serialize ``mods:mods`` as a standalone document, without the METS namespaces it inherits."""
    if mods is None:
        return None
    standalone = copy.deepcopy(mods)
    standalone.tail = None
    etree.cleanup_namespaces(standalone)
    return etree.tostring(standalone, encoding="utf-8")


def _read_dim_fields(xml_data: etree._Element, section: etree._Element, document: _Document) -> list[DimValue]:
    """Read the ``dim:field`` elements of a ``dim:dim`` root, or bare fields, under xmlData."""
    dim_root = xml_data.find(f"{{{ns.DIM}}}dim")
    container = dim_root if dim_root is not None else xml_data
    return [_read_dim_field(field, section, document) for field in container.findall(f"{{{ns.DIM}}}field")]


def _read_dim_field(field: etree._Element, section: etree._Element, document: _Document) -> DimValue:
    schema = field.get("mdschema")
    element = field.get("element")
    if not schema or not element:
        raise document.error(f"a dim:field in {_describe(section)} lacks its mdschema or element attribute.")
    authority = field.get("authority")
    confidence_word = field.get("confidence")
    return DimValue(
        schema=schema,
        element=element,
        qualifier=field.get("qualifier") or None,
        value=_direct_text(field),
        language=field.get("lang"),
        authority=authority,
        confidence=_parse_confidence(authority, confidence_word),
    )


def _parse_confidence(authority: str | None, word: str | None) -> int | None:
    """Convert a confidence word to DSpace's number, with the defaults of DSpace's DIM ingester.

    No authority and no confidence gives None. An authority without a confidence
    gives UNSET (-1). An unknown word gives NOVALUE (0), as ``Choices.getConfidenceValue`` does.
    """
    if word:
        return ns.CONFIDENCE_BY_WORD.get(word.strip().upper(), ns.CONFIDENCE_BY_WORD["NOVALUE"])
    if authority:
        return ns.CONFIDENCE_BY_WORD["UNSET"]
    return None


# --- MODS fallback mapping ----------------------------------------------------------------

# MODS child elements whose text maps to one DIM field: local name -> (element, qualifier).
MODS_SIMPLE_FIELDS = {
    "abstract": ("description", "abstract"),
    "tableOfContents": ("description", "tableofcontents"),
    "genre": ("type", None),
    "accessCondition": ("rights", None),
}
MODS_ORIGIN_FIELDS = {
    "dateIssued": ("date", "issued"),
    "dateCreated": ("date", "created"),
    "publisher": ("publisher", None),
}
MODS_EXTENSION_FIELDS = {
    "dateAccessioned": ("date", "accessioned"),
    "dateAvailable": ("date", "available"),
}
# Qualifiers of dc.contributor in DSpace's default registry. Other MODS roles map to "other".
CONTRIBUTOR_ROLES = ("advisor", "author", "editor", "illustrator", "other")


def _map_mods_element(element: etree._Element) -> list[DimValue]:
    name = etree.QName(element).localname
    language = element.get("lang") or element.get("{http://www.w3.org/XML/1998/namespace}lang")
    if name in MODS_SIMPLE_FIELDS:
        return [_dc(*MODS_SIMPLE_FIELDS[name], _all_text(element), language)]
    if name == "titleInfo":
        qualifier = "alternative" if element.get("type") == "alternative" else None
        return [_dc("title", qualifier, _all_text(title), language) for title in _mods_children(element, "title")]
    if name == "name":
        return [_map_mods_name(element, language)]
    if name == "originInfo":
        return _map_mods_subfields(element, MODS_ORIGIN_FIELDS, language)
    if name == "extension":
        return _map_mods_subfields(element, MODS_EXTENSION_FIELDS, language)
    if name == "identifier":
        return [_dc("identifier", element.get("type") or None, _all_text(element), language)]
    if name == "subject":
        return [_dc("subject", None, _all_text(topic), language) for topic in _mods_children(element, "topic")]
    if name == "note":
        qualifier = "provenance" if element.get("type") == "provenance" else None
        return [_dc("description", qualifier, _all_text(element), language)]
    if name == "language":
        return [_dc("language", "iso", _all_text(term), language) for term in _mods_children(element, "languageTerm")]
    if name == "relatedItem" and element.get("type") == "series":
        return [_dc("relation", "ispartofseries", _all_text(element), language)]
    return []


def _map_mods_name(element: etree._Element, language: str | None) -> DimValue:
    """Map ``mods:name`` to dc.contributor.<role>, or to dc.creator when it has no role."""
    parts = {part.get("type"): _all_text(part) for part in _mods_children(element, "namePart")}
    if "family" in parts:
        value = parts["family"] + (f", {parts['given']}" if parts.get("given") else "")
    else:
        value = " ".join(_all_text(part) for part in _mods_children(element, "namePart"))
    role_terms = [_all_text(term).strip().lower() for role in _mods_children(element, "role")
                  for term in _mods_children(role, "roleTerm")]
    if not role_terms:
        return _dc("creator", None, value, language)
    role = role_terms[0] if role_terms[0] in CONTRIBUTOR_ROLES else "other"
    return _dc("contributor", role, value, language)


def _map_mods_subfields(
    element: etree._Element, table: dict[str, tuple[str, str | None]], language: str | None
) -> list[DimValue]:
    values = []
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname in table:
            values.append(_dc(*table[etree.QName(child).localname], _all_text(child), language))
    return values


def _mods_children(element: etree._Element, local_name: str) -> list[etree._Element]:
    return element.findall(f"{{{ns.MODS}}}{local_name}")


def _dc(element: str, qualifier: str | None, value: str, language: str | None) -> DimValue:
    return DimValue(schema="dc", element=element, qualifier=qualifier, value=value, language=language)


# --- amdSec -------------------------------------------------------------------------------


def _read_admin_refs(element: etree._Element, document: _Document) -> AdminMetadata:
    """Read and merge the admin metadata named by the ADMID of ``element``.

    ADMID may name amdSecs (what DSpace writes) or single metadata sections.
    """
    admin = AdminMetadata()
    for target in document.resolve(element, "ADMID", ("amdSec", *ADMIN_SECTION_TAGS)):
        sections = _admin_sections(target) if _local_name(target) == "amdSec" else [target]
        for section in sections:
            _read_admin_section(section, admin, document)
    return admin


def _read_admin_section(section: etree._Element, admin: AdminMetadata, document: _Document) -> None:
    """Add one techMD, rightsMD, sourceMD or digiprovMD to ``admin``, skipping unknown types.

    DSpace picks the crosswalk by metadata type, not by section kind, and so does this.
    """
    wrap = _md_wrap_or_ref(section)
    if wrap is None:
        return
    md_type = _md_type(wrap)
    if _local_name(wrap) == "mdRef":
        if md_type in LICENSE_TYPES and _href_or_none(wrap):
            admin.license_hrefs[LICENSE_TYPES[md_type]] = _href_or_none(wrap)
        return

    # NOTE: licence streams embedded as mdWrap/binData (manifest-only packages) are
    # skipped, as DSpace's AIP ingester skips licence sections altogether.
    xml_data = wrap.find(_mets("xmlData"))
    if md_type == "AIP-TECHMD":
        values = _read_dim_fields(xml_data, section, document) if xml_data is not None else []
        admin.techmd_dim = (admin.techmd_dim or []) + values
    elif md_type == "METSRIGHTS":
        admin.policies = (admin.policies or []) + _read_policies(xml_data, document)
    elif md_type == "PREMIS" and xml_data is not None:
        admin.premis = _read_premis(xml_data, document)
    elif md_type == "DSPACE-ROLES" and xml_data is not None:
        admin.roles = _merge_roles(admin.roles, _read_roles(xml_data, document))


# --- METSRights ---------------------------------------------------------------------------


def _read_policies(xml_data: etree._Element | None, document: _Document) -> list[PolicyRecord]:
    """Read each ``rights:Context`` as a policy. No RightsDeclarationMD gives an empty list."""
    if xml_data is None:
        return []
    declaration = xml_data.find(f"{{{ns.METSRIGHTS}}}RightsDeclarationMD")
    if declaration is None:
        return []
    return [_read_policy(context, document) for context in declaration.findall(f"{{{ns.METSRIGHTS}}}Context")]


def _read_policy(context: etree._Element, document: _Document) -> PolicyRecord:
    context_class = (context.get("CONTEXTCLASS") or "").strip().upper()
    group_name = ns.GROUP_BY_CONTEXTCLASS.get(context_class)
    eperson_email = None
    if context_class == ns.MANAGED_GRP:
        group_name = _rights_user_name(context, "GROUP", document)
    elif context_class == ns.ACADEMIC_USER:
        eperson_email = _rights_user_name(context, "INDIVIDUAL", document)
    elif group_name is None:
        raise document.error(f"rights:Context CONTEXTCLASS {context.get('CONTEXTCLASS')!r} is not a known class.")

    return PolicyRecord(
        action=_read_policy_action(context.find(f"{{{ns.METSRIGHTS}}}Permissions")),
        context_class=context_class,
        group_name=group_name,
        eperson_email=eperson_email,
        name=context.get("rpName"),
        description=_policy_description(context),
        start_date=_policy_date(context, "start-date", document),
        end_date=_policy_date(context, "end-date", document),
    )


def _policy_description(context: etree._Element) -> str | None:
    """Return the policy description this project writes as a METSRights constraint; DSpace writes none."""
    for constraints in context.findall(f"{{{ns.METSRIGHTS}}}Constraints"):
        if constraints.get("OTHERCONSTRAINTTYPE") == ns.POLICY_DESCRIPTION_CONSTRAINT:
            return constraints.findtext(f"{{{ns.METSRIGHTS}}}ConstraintDescription") or None
    return None


def _rights_user_name(context: etree._Element, user_type: str, document: _Document) -> str:
    for user_name in context.findall(f"{{{ns.METSRIGHTS}}}UserName"):
        if (user_name.get("USERTYPE") or "").strip().upper() == user_type and (user_name.text or "").strip():
            return user_name.text.strip()
    raise document.error(
        f"rights:Context {context.get('CONTEXTCLASS')!r} has no rights:UserName with USERTYPE {user_type!r}."
    )


def _read_policy_action(permissions: etree._Element | None) -> int | None:
    """Map rights:Permissions to a DSpace action, as ``METSRightsCrosswalk`` does on ingest.

    A known OTHERPERMITTYPE wins. Otherwise, only when OTHER is not set:
    DELETE gives DELETE, MODIFY gives WRITE, DISCOVER and DISPLAY give READ.
    Anything else gives None (DSpace would store action -1).
    """
    if permissions is None:
        return None
    other_type = (permissions.get("OTHERPERMITTYPE") or "").strip().upper()
    if other_type in ns.ACTION_BY_OTHERPERMITTYPE:
        return ns.ACTION_BY_OTHERPERMITTYPE[other_type]
    if _is_true(permissions.get("OTHER")):
        return None
    if _is_true(permissions.get("DELETE")):
        return ns.DELETE
    if _is_true(permissions.get("MODIFY")):
        return ns.WRITE
    if _is_true(permissions.get("DISCOVER")) and _is_true(permissions.get("DISPLAY")):
        return ns.READ
    return None


def _policy_date(context: etree._Element, attribute: str, document: _Document) -> date | None:
    """Parse a ``YYYY-MM-DD`` policy date, ignoring a trailing time part."""
    value = (context.get(attribute) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise document.error(f"rights:Context {attribute} {value!r} is not a date (YYYY-MM-DD).") from None


# --- PREMIS -------------------------------------------------------------------------------


def _read_premis(xml_data: etree._Element, document: _Document) -> PremisRecord:
    """Read originalName, size, fixity and formatName of the first PREMIS 1.0 object."""
    premis_object = next(xml_data.iter(f"{{{ns.PREMIS}}}object"), None)
    if premis_object is None:
        return PremisRecord()
    characteristics = premis_object.find(f"{{{ns.PREMIS}}}objectCharacteristics")
    record = PremisRecord(original_name=_premis_text(premis_object, "premis:originalName"))
    if characteristics is None:
        return record

    size = _premis_text(characteristics, "premis:size")
    record.size = _parse_int(size, "premis:size", document) if size is not None else None
    record.format_name = _premis_text(characteristics, "premis:format/premis:formatDesignation/premis:formatName")
    fixity = _choose_fixity(characteristics.findall(f"{{{ns.PREMIS}}}fixity"))
    if fixity is not None:
        record.digest_algorithm = _premis_text(fixity, "premis:messageDigestAlgorithm")
        digest = _premis_text(fixity, "premis:messageDigest")
        record.digest = digest.lower() if digest else None
    return record


def _choose_fixity(fixities: list[etree._Element]) -> etree._Element | None:
    """Prefer the MD5 fixity, the algorithm DSpace checks, else take the first."""
    for fixity in fixities:
        if (_premis_text(fixity, "premis:messageDigestAlgorithm") or "").upper() == "MD5":
            return fixity
    return fixities[0] if fixities else None


def _premis_text(element: etree._Element, path: str) -> str | None:
    found = element.find(path, namespaces={"premis": ns.PREMIS})
    text = (found.text or "").strip() if found is not None else ""
    return text or None


# --- DSPACE-ROLES -------------------------------------------------------------------------
# DSpace writes these elements without a namespace prefix inside the METS default
# namespace, so they are matched by local name in any namespace.


def _read_roles(xml_data: etree._Element, document: _Document) -> RolesRecord:
    roles_root = next((element for element in xml_data.iter() if _local_name(element) == "DSpaceRoles"), None)
    if roles_root is None:
        return RolesRecord()
    groups = [
        _read_group(group, document) for groups in _named(roles_root, "Groups") for group in _named(groups, "Group")
    ]
    people = [_read_person(person) for people in _named(roles_root, "People") for person in _named(people, "Person")]
    return RolesRecord(groups=groups, people=people)


def _read_group(element: etree._Element, document: _Document) -> GroupRecord:
    name = (element.get("Name") or "").strip()
    if not name:
        raise document.error(f"DSPACE-ROLES Group with ID {element.get('ID')!r} has no Name.")
    member_emails = [
        _role_reference_name(member, name, document)
        for members in _named(element, "Members") for member in _named(members, "Member")
    ]
    member_group_names = [
        _role_reference_name(member_group, name, document)
        for member_groups in _named(element, "MemberGroups") for member_group in _named(member_groups, "MemberGroup")
    ]
    return GroupRecord(
        name=name,
        id=element.get("ID"),
        type=element.get("Type"),
        member_emails=member_emails,
        member_group_names=member_group_names,
    )


def _role_reference_name(element: etree._Element, group_name: str, document: _Document) -> str:
    """Return the Name of a Member (an email) or MemberGroup (a group name)."""
    name = (element.get("Name") or "").strip()
    if not name:
        raise document.error(f"DSPACE-ROLES Group {group_name!r} has a {_local_name(element)} without Name.")
    return name


def _read_person(element: etree._Element) -> PersonRecord:
    password = next(_named(element, "PasswordHash"), None)
    return PersonRecord(
        id=element.get("ID"),
        email=_role_text(element, "Email"),
        netid=_role_text(element, "Netid"),
        first_name=_role_text(element, "FirstName"),
        last_name=_role_text(element, "LastName"),
        language=_role_text(element, "Language"),
        password_hash=_role_text(element, "PasswordHash"),
        password_digest_algorithm=password.get("digest") if password is not None else None,
        password_salt=password.get("salt") if password is not None else None,
        can_log_in=next(_named(element, "CanLogin"), None) is not None,
        require_certificate=next(_named(element, "RequireCertificate"), None) is not None,
        self_registered=next(_named(element, "SelfRegistered"), None) is not None,
    )


def _role_text(element: etree._Element, local_name: str) -> str | None:
    child = next(_named(element, local_name), None)
    text = (child.text or "").strip() if child is not None else ""
    return text or None


def _merge_roles(current: RolesRecord | None, new: RolesRecord) -> RolesRecord:
    if current is None:
        return new
    return RolesRecord(groups=current.groups + new.groups, people=current.people + new.people)


# --- small helpers ------------------------------------------------------------------------


def _local_name(element: etree._Element) -> str | None:
    """Return the local name of an element, or None for comments and processing instructions."""
    if not isinstance(element.tag, str):
        return None
    return etree.QName(element).localname


def _named(element: etree._Element, local_name: str):
    """Yield the child elements of ``element`` with ``local_name``, in any namespace."""
    return (child for child in element if _local_name(child) == local_name)


def _describe(element: etree._Element) -> str:
    element_id = element.get("ID")
    name = _local_name(element) or "node"
    return f"{name} {element_id!r}" if element_id else name


def _admin_sections(amd_sec: etree._Element) -> list[etree._Element]:
    return [child for child in amd_sec if child.tag in {_mets(name) for name in ADMIN_SECTION_TAGS}]


def _md_wrap_or_ref(section: etree._Element) -> etree._Element | None:
    wrap = section.find(_mets("mdWrap"))
    return wrap if wrap is not None else section.find(_mets("mdRef"))


def _md_label(wrap: etree._Element) -> str:
    """Return OTHERMDTYPE when MDTYPE is OTHER, else MDTYPE, as written."""
    md_type = (wrap.get("MDTYPE") or "").strip()
    if md_type.upper() == "OTHER":
        return (wrap.get("OTHERMDTYPE") or "").strip()
    return md_type


def _md_type(wrap: etree._Element) -> str:
    """Return the metadata type of an mdWrap or mdRef upper-cased, because DSpace compares it case-insensitively."""
    return _md_label(wrap).upper()


def _loctype(element: etree._Element) -> str:
    return (element.get("LOCTYPE") or "").strip().upper()


def _href_or_none(element: etree._Element) -> str | None:
    href = (element.get(XLINK_HREF) or "").strip()
    return href or None


def _int_attribute(element: etree._Element, attribute: str, document: _Document) -> int | None:
    value = element.get(attribute)
    if value is None:
        return None
    return _parse_int(value, f"{_describe(element)} {attribute}", document)


def _parse_int(value: str, where: str, document: _Document) -> int:
    # int() alone would also accept "1_000", "+5" and non-ASCII digits.
    if not DIGITS_PATTERN.fullmatch(value.strip()):
        raise document.error(f"{where} {value!r} is not a non-negative integer.")
    return int(value.strip())


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _direct_text(element: etree._Element) -> str:
    """Return the text directly inside ``element``, like JDOM's ``getText``, which DSpace uses."""
    pieces = [element.text or ""]
    pieces.extend(child.tail or "" for child in element)
    return "".join(pieces)


def _all_text(element: etree._Element) -> str:
    return "".join(element.itertext()).strip()
