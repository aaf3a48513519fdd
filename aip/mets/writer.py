"""Serialize a ``PackageManifest`` as a DSpace AIP mets.xml.

The document follows the DSpace AIP profile: MODS and DIM dmdSecs, an amdSec for
the object (DSPACE-ROLES, licence references, METSRights, AIP-TECHMD), one per
bundle and one per bitstream, the fileSec, the "DSpace Object" structMap and the
"Parent" structMap. IDs come from one counter that starts at 1 in every package
and is consumed in document order, and nothing depends on the clock, so an
unchanged object always gives the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from lxml import etree

from aip.mets import namespaces as ns
from aip.mets.crosswalks import build_dim, build_metsrights, build_mods, build_premis, build_roles
from aip.mets.model import AdminMetadata, BundleRecord, DescriptiveMetadata, FileRecord, PackageManifest

XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8" standalone="no"?>\n'
METS_SCHEMA_URL = "http://www.loc.gov/standards/mets/mets.xsd"

# Bundles whose files DSpace links to the ORIGINAL file they were derived from.
_DERIVATIVE_BUNDLES = ("THUMBNAIL", "TEXT")


DEFAULT_DMD_TYPES = ("MODS", "DIM")
# Every administrative section the writer can produce; DSpace's default configuration writes all of them.
ADMIN_SECTIONS = frozenset(
    {"PREMIS", "DSPACE-ROLES", "DSpaceDepositLicense", "CreativeCommonsRDF", "CreativeCommonsText", "METSRIGHTS", "AIP-TECHMD"}
)


@dataclass
class WriterContext:
    """Values of the installation that appear in every manifest it writes."""

    custodian: str  # the site handle, "<prefix>/0"
    creator: str  # name of the software that wrote the package
    premis_urls: dict[str, str] = field(default_factory=dict)  # file ID -> PREMIS object identifier
    # dmdSec types to write, in order, and the administrative sections to write.
    dmd_types: tuple[str, ...] = DEFAULT_DMD_TYPES
    admin_sections: frozenset[str] = ADMIN_SECTIONS


def format_mets_datetime(moment: datetime) -> str:
    """Return ``moment`` as METS LASTMODDATE text: UTC, whole seconds, no zone, as DSpace writes it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


class _IdCounter:
    def __init__(self) -> None:
        self._next = 1

    def __call__(self, prefix: str) -> str:
        value = f"{prefix}_{self._next}"
        self._next += 1
        return value


def _mets(tag: str) -> str:
    return f"{{{ns.METS}}}{tag}"


def build_mets(manifest: PackageManifest, context: WriterContext) -> bytes:
    """Return the mets.xml bytes for ``manifest``."""
    ids = _IdCounter()
    root = _build_root(manifest)
    _build_header(root, manifest, context)

    dmd_ids = _add_descriptive(root, manifest.descriptive, manifest.object_type, ids, context.dmd_types)
    template_ids = None
    if manifest.template_descriptive is not None:
        template_ids = _add_descriptive(root, manifest.template_descriptive, "ITEM", ids, context.dmd_types)
    object_amd_id = _add_amdsec(root, manifest.admin, ids, context=context, techmd_type=manifest.object_type)
    file_ids = _add_file_amdsecs(root, manifest, ids, context)

    if manifest.bundles or manifest.logo:
        _add_filesec(root, manifest, file_ids)
    _add_object_structmap(root, manifest, ids, dmd_ids, object_amd_id, template_ids)
    if manifest.object_type != "SITE" and manifest.parent_handle:
        _add_parent_structmap(root, manifest.parent_handle, ids)

    return XML_DECLARATION + etree.tostring(root, encoding="utf-8", pretty_print=True)


def _build_root(manifest: PackageManifest) -> etree._Element:
    root = etree.Element(_mets("mets"), nsmap={None: ns.METS, "xlink": ns.XLINK, "xsi": ns.XSI})
    if manifest.uuid:
        root.set("ID", f"DSpace_{manifest.object_type}_DB-ID-{manifest.uuid}")
    else:
        root.set("ID", f"DSpace_{manifest.object_type}_{(manifest.handle or '').replace('/', '-')}")
    root.set("OBJID", f"hdl:{manifest.handle}" if manifest.handle else f"DSpace_DB_{manifest.object_type}_{manifest.uuid}")
    root.set("TYPE", f"DSpace {manifest.object_type}")
    root.set("PROFILE", ns.PROFILE)
    root.set(f"{{{ns.XSI}}}schemaLocation", f"{ns.METS} {METS_SCHEMA_URL}")
    return root


def _build_header(root: etree._Element, manifest: PackageManifest, context: WriterContext) -> None:
    header = etree.SubElement(root, _mets("metsHdr"))
    if manifest.last_modified is not None:
        header.set("LASTMODDATE", format_mets_datetime(manifest.last_modified))
    for role, other_type, name in (
        ("CUSTODIAN", "DSpace Archive", context.custodian),
        ("CREATOR", "DSpace Software", context.creator),
    ):
        agent = etree.SubElement(header, _mets("agent"), ROLE=role, TYPE="OTHER", OTHERTYPE=other_type)
        etree.SubElement(agent, _mets("name")).text = name


def _md_wrap(parent: etree._Element, md_type: str, content: etree._Element) -> None:
    if md_type in ("MODS", "PREMIS"):
        wrap = etree.SubElement(parent, _mets("mdWrap"), MDTYPE=md_type)
    else:
        wrap = etree.SubElement(parent, _mets("mdWrap"), MDTYPE="OTHER", OTHERMDTYPE=md_type)
    etree.SubElement(wrap, _mets("xmlData")).append(content)


def _add_descriptive(
    root, sections: list[DescriptiveMetadata], object_type: str, ids: _IdCounter, dmd_types: tuple[str, ...]
) -> list[str]:
    """Add the configured dmdSecs (MODS, DIM) built from the DIM values, and return their IDs."""
    dim_values = next((section.dim for section in sections if section.md_type == "DIM"), None) or []
    builders = {"MODS": lambda: build_mods(dim_values), "DIM": lambda: build_dim(dim_values, object_type=object_type)}
    added = []
    for md_type in dmd_types:
        content = builders[md_type]()
        if md_type == "MODS" and len(content) == 0:
            # MODS requires at least one element, and no value here maps to one.
            continue
        dmd_id = ids("dmdSec")
        section = etree.SubElement(root, _mets("dmdSec"), ID=dmd_id)
        _md_wrap(section, md_type, content)
        added.append(dmd_id)
    return added


def _add_amdsec(
    root, admin: AdminMetadata, ids: _IdCounter, *, context: WriterContext, techmd_type: str, file_id: str | None = None
) -> str:
    amd_id = ids("amd")
    amd = etree.SubElement(root, _mets("amdSec"), ID=amd_id)
    sections = context.admin_sections
    if admin.premis is not None and "PREMIS" in sections:
        techmd = etree.SubElement(amd, _mets("techMD"), ID=ids("techMD"))
        url = context.premis_urls.get(file_id or "", admin.premis.original_name or "")
        _md_wrap(techmd, "PREMIS", build_premis(admin.premis, identifier_url=url))
    if admin.roles is not None and (admin.roles.groups or admin.roles.people) and "DSPACE-ROLES" in sections:
        techmd = etree.SubElement(amd, _mets("techMD"), ID=ids("techMD"))
        _md_wrap(techmd, "DSPACE-ROLES", build_roles(admin.roles))
    for md_type, href in admin.license_hrefs.items():
        if md_type not in sections:
            continue
        rights = etree.SubElement(amd, _mets("rightsMD"), ID=ids("rightsMD"))
        mimetype = "text/xml" if md_type == "CreativeCommonsRDF" else "text/plain"
        reference = etree.SubElement(rights, _mets("mdRef"), LOCTYPE="URL")
        reference.set(f"{{{ns.XLINK}}}type", "simple")
        reference.set(f"{{{ns.XLINK}}}href", href)
        reference.set("MDTYPE", "OTHER")
        reference.set("OTHERMDTYPE", md_type)
        reference.set("MIMETYPE", mimetype)
    if admin.policies is not None and "METSRIGHTS" in sections:
        rights = etree.SubElement(amd, _mets("rightsMD"), ID=ids("rightsMD"))
        _md_wrap(rights, "METSRIGHTS", build_metsrights(admin.policies))
    if admin.techmd_dim is not None and "AIP-TECHMD" in sections:
        source = etree.SubElement(amd, _mets("sourceMD"), ID=ids("sourceMD"))
        _md_wrap(source, "AIP-TECHMD", build_dim(admin.techmd_dim, object_type=techmd_type))
    return amd_id


def _add_file_amdsecs(root, manifest: PackageManifest, ids: _IdCounter, context: WriterContext) -> dict[str, str]:
    """Add the logo's amdSec, then one per bundle, each followed by one per file; return their IDs by owner."""
    admin_ids: dict[str, str] = {}
    logo = manifest.logo
    if logo is not None and (logo.admin.premis or logo.admin.policies is not None or logo.admin.techmd_dim):
        admin_ids[logo.id] = _add_amdsec(
            root, logo.admin, ids, context=context, techmd_type="BITSTREAM", file_id=logo.id
        )
    for index, bundle in enumerate(manifest.bundles):
        admin_ids[f"bundle:{index}"] = _add_amdsec(root, bundle.admin, ids, context=context, techmd_type="BUNDLE")
        for record in bundle.files:
            admin_ids[record.id] = _add_amdsec(
                root, record.admin, ids, context=context, techmd_type="BITSTREAM", file_id=record.id
            )
    return admin_ids


def _add_filesec(root, manifest: PackageManifest, admin_ids: dict[str, str]) -> None:
    file_sec = etree.SubElement(root, _mets("fileSec"))
    if manifest.logo is not None:
        group = etree.SubElement(file_sec, _mets("fileGrp"), USE="LOGO")
        _add_file(group, manifest.logo, admin_id=admin_ids.get(manifest.logo.id))
    for index, bundle in enumerate(manifest.bundles):
        group = etree.SubElement(file_sec, _mets("fileGrp"), ADMID=admin_ids[f"bundle:{index}"], USE=bundle.name)
        for record in bundle.files:
            _add_file(group, record, admin_id=admin_ids[record.id])


def _add_file(group: etree._Element, record: FileRecord, *, admin_id: str | None) -> None:
    element = etree.SubElement(group, _mets("file"), ID=record.id)
    for name, value in (
        ("MIMETYPE", record.mimetype),
        ("SEQ", None if record.sequence_id is None else str(record.sequence_id)),
        ("SIZE", None if record.size is None else str(record.size)),
        ("CHECKSUM", record.checksum),
        ("CHECKSUMTYPE", record.checksum_type if record.checksum else None),
        ("ADMID", admin_id),
        ("GROUPID", record.group_id),
    ):
        if value:
            element.set(name, value)
    location = etree.SubElement(element, _mets("FLocat"), LOCTYPE="URL")
    location.set(f"{{{ns.XLINK}}}type", "simple")
    location.set(f"{{{ns.XLINK}}}href", record.href)


def _add_object_structmap(root, manifest, ids, dmd_ids, object_amd_id, template_ids) -> None:
    struct = etree.SubElement(root, _mets("structMap"), ID=ids("struct"), LABEL="DSpace Object", TYPE="LOGICAL")
    div0 = etree.SubElement(struct, _mets("div"), ID=ids("div"))
    div0.set("DMDID", " ".join(dmd_ids))
    div0.set("ADMID", object_amd_id)
    div0.set("TYPE", "DSpace Object Contents")

    if manifest.logo is not None:
        etree.SubElement(div0, _mets("fptr"), FILEID=manifest.logo.id)
    if manifest.primary_file_id:
        etree.SubElement(div0, _mets("fptr"), FILEID=manifest.primary_file_id)
    if template_ids is not None:
        etree.SubElement(div0, _mets("div"), ID=ids("div"), DMDID=" ".join(template_ids), TYPE="DSpace ITEM Template")
    for bundle in manifest.bundles:
        if bundle.name != "ORIGINAL":
            continue
        for record in bundle.files:
            div = etree.SubElement(div0, _mets("div"), ID=ids("div"), TYPE="DSpace BITSTREAM")
            etree.SubElement(div, _mets("fptr"), FILEID=record.id)
    for child in manifest.children:
        div = etree.SubElement(div0, _mets("div"), ID=ids("div"), TYPE=f"DSpace {child.object_type}")
        if child.handle:
            _add_mptr(div, ids, "HANDLE", child.handle)
        if child.href:
            _add_mptr(div, ids, "URL", child.href)


def _add_mptr(parent: etree._Element, ids: _IdCounter, location_type: str, href: str) -> None:
    pointer = etree.SubElement(parent, _mets("mptr"), ID=ids("mptr"), LOCTYPE=location_type)
    pointer.set(f"{{{ns.XLINK}}}type", "simple")
    pointer.set(f"{{{ns.XLINK}}}href", href)


def _add_parent_structmap(root, parent_handle: str, ids: _IdCounter) -> None:
    struct = etree.SubElement(root, _mets("structMap"), ID=ids("struct"), LABEL="Parent", TYPE="LOGICAL")
    div = etree.SubElement(
        struct, _mets("div"), ID=ids("div"), LABEL="Parent of this DSpace Object", TYPE="AIP Parent Link"
    )
    _add_mptr(div, ids, "HANDLE", parent_handle)


def derivative_group_id(bundle: BundleRecord, record: FileRecord, original_ids_by_name: dict[str, str]) -> str:
    """Return the GROUPID of a file: derived files share the group of their ORIGINAL source.

    DSpace names a derived file after its source plus a four-character suffix
    (``paper.pdf`` -> ``paper.pdf.txt``), so the source is found by dropping it.
    """
    if bundle.name.startswith(_DERIVATIVE_BUNDLES) and record.admin.premis and record.admin.premis.original_name:
        source_id = original_ids_by_name.get(record.admin.premis.original_name[:-4])
        if source_id:
            return f"GROUP_{source_id}"
    return f"GROUP_{record.id}"
