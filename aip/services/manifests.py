"""Describe one repository object as a ``PackageManifest`` for the METS writer.

Each ``*_manifest`` function reads one object with its relations (prefetched
where it matters: an item's bundles, bitstreams and policies) and returns the
manifest plus the bitstreams whose files go into the package.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Prefetch, prefetch_related_objects

from aip import selectors
from aip.mets.model import (
    AdminMetadata,
    BundleRecord,
    ChildReference,
    DescriptiveMetadata,
    DimValue,
    FileRecord,
    PackageManifest,
    PremisRecord,
)
from aip.mets.writer import derivative_group_id
from aip.services import roles
from aip.services.locks import read_snapshot
from aip.errors import AipError
from aip.options import ExportOptions
from repository.models import (
    Bitstream,
    Bundle,
    Collection,
    Community,
    Item,
    MetadataField,
    MetadataValue,
    ResourcePolicy,
    Site,
    bitstream_storage,
)

# Container fields DSpace writes, in its order: (AIP element, AIP qualifier) -> stored field.
# dc.identifier.uri is written from the handle and never stored.
COLLECTION_FIELDS = [
    (("description", None), ("description", None)),
    (("description", "abstract"), ("description", "abstract")),
    (("description", "tableofcontents"), ("description", "tableofcontents")),
    (("identifier", "uri"), None),
    (("provenance", None), ("description", "provenance")),
    (("rights", None), ("rights", None)),
    (("rights", "license"), ("rights", "license")),
    (("title", None), ("title", None)),
]
COMMUNITY_FIELDS = [entry for entry in COLLECTION_FIELDS if entry[0] not in (("provenance", None), ("rights", "license"))]

EMPTY_MD5 = hashlib.md5(b"").hexdigest()

SUPPORT_LEVEL_WORDS = {0: "UNKNOWN", 1: "KNOWN", 2: "SUPPORTED"}
LICENSE_BUNDLE = "LICENSE"
CC_LICENSE_BUNDLE = "CC-LICENSE"


class UnreadableBitstreamError(AipError):
    """A bitstream whose file cannot be read from storage, with no ``unauthorized`` option to say what to do."""


@dataclass
class PackageContent:
    manifest: PackageManifest
    # Zip entry name and bitstream; None stands for an empty placeholder entry.
    files: list[tuple[str, Bitstream | None]] = field(default_factory=list)
    premis_urls: dict[str, str] = field(default_factory=dict)


def _readable_or_substitute(bitstream: Bitstream, where: str, unauthorized: str | None) -> Bitstream | None:
    """Return the bitstream to export, a zero-length stand-in, or None to leave it out.

    A bitstream is unreadable when its file is missing from the bitstream storage.
    ``unauthorized`` decides: unset raises, "skip" leaves it out, "zero" writes an
    empty file whose size and MD5 in the manifest are those of the empty file.
    """
    if bitstream.file.name and bitstream_storage().exists(bitstream.file.name):
        return bitstream
    if unauthorized is None:
        raise UnreadableBitstreamError(
            f"Bitstream {bitstream.name!r} ({bitstream.uuid}) of {where} cannot be read: its file "
            f"{bitstream.file.name or '(none)'} is not in the bitstream storage. Restore the file, or export "
            "with -o unauthorized=skip (leave it out) or -o unauthorized=zero (write an empty file)."
        )
    if unauthorized == "skip":
        return None
    stand_in = copy.copy(bitstream)
    stand_in.size_bytes = 0
    stand_in.checksum = EMPTY_MD5
    stand_in.checksum_algorithm = "MD5"
    stand_in.file = None
    return stand_in


def dim_value(value: MetadataValue) -> DimValue:
    return DimValue(
        schema=value.field.schema.short_id,
        element=value.field.element,
        qualifier=value.field.qualifier,
        value=value.value,
        language=value.language,
        authority=value.authority,
        confidence=value.confidence if value.authority else None,
    )


def _metadata(obj) -> list[MetadataValue]:
    return list(obj.metadata.select_related("field__schema").order_by("place", "id"))


def _policies(obj) -> list:
    return roles.policy_records(obj.policies.select_related("group", "eperson"))


def _container_dim(obj, fields) -> list[DimValue]:
    """Return the fixed DIM fields of a community or collection: the first value of each, or empty."""
    first_values: dict[tuple[str, str | None], str] = {}
    for value in _metadata(obj):
        if value.field.schema.short_id == "dc":
            first_values.setdefault((value.field.element, value.field.qualifier), value.value)
    values = []
    for (element, qualifier), stored in fields:
        text = f"hdl:{obj.handle_string}" if stored is None else first_values.get(stored, "")
        values.append(DimValue(schema="dc", element=element, qualifier=qualifier, value=text or ""))
    return values


def bitstream_entry_name(bitstream: Bitstream) -> str:
    """Return the zip entry name of a bitstream: ``bitstream_<uuid>[.<first format extension>]``."""
    extensions = bitstream.format.extensions if bitstream.format else []
    return f"bitstream_{bitstream.uuid}" + (f".{extensions[0]}" if extensions else "")


def _premis_url(bitstream: Bitstream) -> str:
    return f"{settings.SITE_URL.rstrip('/')}/bitstreams/{bitstream.uuid}/download"


def _bitstream_techmd(bitstream: Bitstream) -> list[DimValue]:
    fmt = bitstream.format
    internal = ""
    if fmt:
        internal = "true" if fmt.internal else "false"
    candidates = [
        ("title", None, bitstream.name),
        ("title", "alternative", bitstream.source),
        ("description", None, bitstream.description),
        ("format", None, bitstream.user_format_description),
        ("format", "medium", fmt.short_description if fmt else ""),
        ("format", "mimetype", fmt.mimetype if fmt else ""),
        ("format", "supportlevel", SUPPORT_LEVEL_WORDS.get(fmt.support_level, "UNKNOWN") if fmt else ""),
        ("format", "internal", internal),
    ]
    return [
        DimValue(schema="dc", element=element, qualifier=qualifier, value=text)
        for element, qualifier, text in candidates
        if text
    ]


def _file_record(bitstream: Bitstream, entry_name: str, policies, names: dict[str, str] | None = None) -> FileRecord:
    file_id = f"bitstream_{bitstream.uuid}"
    mimetype = bitstream.format.mimetype if bitstream.format else "application/octet-stream"
    premis = PremisRecord(
        original_name=bitstream.name or None,
        size=bitstream.size_bytes,
        digest_algorithm=bitstream.checksum_algorithm if bitstream.checksum else None,
        digest=bitstream.checksum or None,
        format_name=mimetype,
    )
    return FileRecord(
        id=file_id,
        href=entry_name,
        mimetype=mimetype,
        sequence_id=bitstream.sequence_id,
        size=bitstream.size_bytes,
        checksum=bitstream.checksum or None,
        checksum_type=bitstream.checksum_algorithm if bitstream.checksum else None,
        admin=AdminMetadata(policies=roles.policy_records(policies, names), premis=premis, techmd_dim=_bitstream_techmd(bitstream)),
    )


def _logo_record(owner, content: PackageContent, unauthorized: str | None) -> FileRecord | None:
    logo = owner.logo
    if logo is None:
        return None
    logo = _readable_or_substitute(logo, f"the logo of {owner.object_type} {owner.handle_string}", unauthorized)
    if logo is None:
        return None
    entry_name = bitstream_entry_name(logo)
    content.files.append((entry_name, logo if logo.file else None))
    record = _file_record(logo, entry_name, owner.logo.policies.select_related("group", "eperson"))
    content.premis_urls[record.id] = _premis_url(logo)
    # DSpace writes a logo without SEQ; its PREMIS, AIP-TECHMD and policies travel in an amdSec of its own.
    record.sequence_id = None
    return record


def _children(obj) -> list[ChildReference]:
    return [
        ChildReference(object_type=child.object_type, href=selectors.package_file_name(child), handle=child.handle_string)
        for child in selectors.children_listed(obj)
    ]


def _techmd(pairs: list[tuple[str, str | None, str]]) -> list[DimValue]:
    return [DimValue(schema="dc", element=e, qualifier=q, value=v) for e, q, v in pairs if v]


def site_manifest(site: Site, *, include_passwords: bool = False) -> PackageContent:
    handle = selectors.site_handle()
    identifiers = [("identifier", "uri", f"hdl:{handle}"), ("identifier", "uri", settings.SITE_URL)]
    dim = _techmd(identifiers + [("title", None, site.name)])
    policies = _policies(site)
    admin = AdminMetadata(
        techmd_dim=_techmd(identifiers),
        roles=roles.site_roles(include_passwords=include_passwords),
        policies=policies or None,
    )
    manifest = _container_manifest(site, "SITE", handle, dim, admin, parent=None)
    return PackageContent(manifest=manifest)


def community_manifest(community: Community, options: ExportOptions) -> PackageContent:
    content = PackageContent(manifest=None)  # type: ignore[arg-type]
    parent = selectors.parent_handle_of(community)
    admin = AdminMetadata(
        techmd_dim=_techmd([("identifier", "uri", f"hdl:{community.handle_string}"), ("relation", "isPartOf", f"hdl:{parent}")]),
        roles=roles.container_roles(community, include_passwords=options.include_passwords),
        policies=_policies(community),
    )
    dim = _container_dim(community, COMMUNITY_FIELDS)
    content.manifest = _container_manifest(community, "COMMUNITY", community.handle_string, dim, admin, parent=parent)
    content.manifest.logo = _logo_record(community, content, options.unauthorized)
    return content


def collection_manifest(collection: Collection, options: ExportOptions) -> PackageContent:
    content = PackageContent(manifest=None)  # type: ignore[arg-type]
    parent = selectors.parent_handle_of(collection)
    techmd = [("identifier", "uri", f"hdl:{collection.handle_string}")]
    if parent:
        techmd.append(("relation", "isPartOf", f"hdl:{parent}"))
    for other in collection.other_communities.select_related("handle").order_by("handle__handle"):
        techmd.append(("relation", "isReferencedBy", f"hdl:{other.handle_string}"))
    admin = AdminMetadata(
        techmd_dim=_techmd(techmd), roles=roles.container_roles(collection, include_passwords=options.include_passwords), policies=_policies(collection)
    )
    dim = _container_dim(collection, COLLECTION_FIELDS)
    content.manifest = _container_manifest(collection, "COLLECTION", collection.handle_string, dim, admin, parent=parent)
    content.manifest.logo = _logo_record(collection, content, options.unauthorized)
    if collection.template_item_id:
        template_dim = [dim_value(value) for value in _metadata(collection.template_item)]
        content.manifest.template_descriptive = [DescriptiveMetadata(md_type="DIM", dim=template_dim)]
    return content


def _container_manifest(obj, object_type, handle, dim, admin, *, parent) -> PackageManifest:
    return PackageManifest(
        object_type=object_type,
        handle=handle,
        uuid=str(obj.uuid),
        profile="",
        last_modified=None,
        parent_handle=parent,
        descriptive=[DescriptiveMetadata(md_type="DIM", dim=dim)],
        admin=admin,
        bundles=[],
        primary_file_id=None,
        logo=None,
        children=_children(obj),
        template_descriptive=None,
    )


# Set on an item by ``items_prefetch``: the export names of the groups its policies name.
_EXPORT_NAMES = "_aip_export_names"
# Number of items whose relations one batch of queries reads.
PREFETCH_BATCH = 100


def items_prefetch(items: list[Item]) -> None:
    """Read everything the AIPs of ``items`` carry, for all of them at once, in a fixed number of queries.

    ``item_manifest`` then reads nothing more for these items. The relations stay on the
    instances, so a caller prefetches a bounded batch at a time and drops the items after
    writing them.
    """
    items = [item for item in items if not items_prefetched(item)]
    if not items:
        return
    # One snapshot for the batch, so that each item's package shows it at one moment while people edit it.
    with read_snapshot():
        _items_read(items)


def items_prefetched(obj) -> bool:
    """Tell whether ``items_prefetch`` read the relations of ``obj``, so that its manifest reads nothing more."""
    return hasattr(obj, _EXPORT_NAMES)


def _items_read(items: list[Item]) -> None:
    policies = ResourcePolicy.objects.select_related("group", "eperson")
    bitstreams = Bitstream.objects.select_related("format").prefetch_related(Prefetch("policies", queryset=policies))
    bundles = Bundle.objects.order_by("position", "id").prefetch_related(
        Prefetch("bitstreams", queryset=bitstreams.order_by("position", "id")),
        Prefetch("policies", queryset=policies),
    )
    prefetch_related_objects(
        items,
        "submitter",
        Prefetch("owning_collection", queryset=Collection.objects.select_related("handle")),
        Prefetch("bundles", queryset=bundles),
        Prefetch("policies", queryset=policies),
        Prefetch("metadata", queryset=MetadataValue.objects.order_by("place", "id")),
        Prefetch("mapped_collections", queryset=Collection.objects.select_related("handle").order_by("handle__handle")),
    )
    _metadata_fields_attach([value for item in items for value in item.metadata.all()])
    names = roles.export_names(name for item in items for name in _item_group_names(item))
    for item in items:
        setattr(item, _EXPORT_NAMES, names)


def _metadata_fields_attach(values: list[MetadataValue]) -> None:
    """Give ``values`` their fields and schemas with one query, sharing one instance per field."""
    field_ids = {value.field_id for value in values}
    fields = MetadataField.objects.select_related("schema").in_bulk(field_ids) if field_ids else {}
    for value in values:
        MetadataValue.field.field.set_cached_value(value, fields[value.field_id])


def items_prefetch_ahead(current, upcoming: Iterable, *, batch_size: int = PREFETCH_BATCH) -> None:
    """Prefetch ``current``, when it is an item not prefetched yet, with the next items of ``upcoming``.

    ``upcoming`` lists the objects to be exported next, in order; taking at most
    ``batch_size`` items bounds the memory the prefetched relations use.
    """
    if not isinstance(current, Item) or items_prefetched(current):
        return
    batch = [current]
    for obj in upcoming:
        if len(batch) >= batch_size:
            break
        if isinstance(obj, Item):
            batch.append(obj)
    items_prefetch(batch)


def _item_group_names(item: Item) -> list[str]:
    names = roles.policy_group_names(item.policies.all())
    for bundle in item.bundles.all():
        names += roles.policy_group_names(bundle.policies.all())
        for bitstream in bundle.bitstreams.all():
            names += roles.policy_group_names(bitstream.policies.all())
    return names


def _item_with_relations(item: Item) -> Item:
    """Return ``item`` with its relations read, reading it again unless ``items_prefetch`` already did."""
    if items_prefetched(item):
        return item
    item = Item.objects.select_related("handle", "submitter", "owning_collection__handle").get(pk=item.pk)
    items_prefetch([item])
    return item


def item_manifest(item: Item, options: ExportOptions) -> PackageContent:
    item = _item_with_relations(item)
    names = getattr(item, _EXPORT_NAMES)
    content = PackageContent(manifest=None)  # type: ignore[arg-type]
    bundles, primary_file_id = _item_bundles(item, content, options, names)

    admin = AdminMetadata(techmd_dim=_item_techmd(item), policies=roles.policy_records(item.policies.all(), names))
    admin.license_hrefs = _license_hrefs(bundles)
    content.manifest = PackageManifest(
        object_type="ITEM",
        handle=item.handle_string,
        uuid=str(item.uuid),
        profile="",
        last_modified=item.last_modified,
        parent_handle=selectors.parent_handle_of(item),
        descriptive=[DescriptiveMetadata(md_type="DIM", dim=[dim_value(v) for v in item.metadata.all()])],
        admin=admin,
        bundles=bundles,
        primary_file_id=primary_file_id,
        logo=None,
        children=[],
        template_descriptive=None,
    )
    return content


def _item_techmd(item: Item) -> list[DimValue]:
    pairs = [
        ("creator", None, item.submitter.email if item.submitter and item.submitter.email else ""),
        ("identifier", "uri", f"hdl:{item.handle_string}" if item.handle_string else ""),
        (
            "relation",
            "isPartOf",
            f"hdl:{item.owning_collection.handle_string}" if item.owning_collection_id else "",
        ),
    ]
    for mapped in item.mapped_collections.all():
        if mapped.pk != item.owning_collection_id and mapped.handle_string:
            pairs.append(("relation", "isReferencedBy", f"hdl:{mapped.handle_string}"))
    if item.withdrawn:
        pairs.append(("rights", "accessRights", "WITHDRAWN"))
    return _techmd(pairs)


def _item_bundles(
    item: Item, content: PackageContent, options: ExportOptions, names: dict[str, str]
) -> tuple[list[BundleRecord], str | None]:
    records = []
    primary_file_id = None
    original_ids_by_name: dict[str, str] = {}
    for bundle in item.bundles.all():
        if not options.includes_bundle(bundle.name):
            continue
        record = BundleRecord(name=bundle.name, admin=AdminMetadata(policies=roles.policy_records(bundle.policies.all(), names)))
        for stored in bundle.bitstreams.all():
            bitstream = _readable_or_substitute(stored, f"item {item.handle_string}", options.unauthorized)
            if bitstream is None:
                continue
            entry_name = bitstream_entry_name(bitstream)
            file_record = _file_record(bitstream, entry_name, stored.policies.all(), names)
            content.files.append((entry_name, bitstream if bitstream.file else None))
            content.premis_urls[file_record.id] = _premis_url(bitstream)
            record.files.append(file_record)
            if bundle.name == "ORIGINAL":
                original_ids_by_name[bitstream.name] = file_record.id
                if bundle.primary_bitstream_id == bitstream.id:
                    primary_file_id = file_record.id
        records.append(record)
    for record in records:
        for file_record in record.files:
            file_record.group_id = derivative_group_id(record, file_record, original_ids_by_name)
    return records, primary_file_id


def _license_hrefs(bundles: list[BundleRecord]) -> dict[str, str]:
    """Return the licence sections of an item: references to files already in the package."""
    hrefs: dict[str, str] = {}
    for bundle in bundles:
        if bundle.name == LICENSE_BUNDLE and bundle.files:
            hrefs["DSpaceDepositLicense"] = bundle.files[0].href
        if bundle.name == CC_LICENSE_BUNDLE:
            for record in bundle.files:
                name = record.admin.premis.original_name if record.admin.premis else None
                if name == "license_rdf":
                    hrefs["CreativeCommonsRDF"] = record.href
                elif name == "license_text":
                    hrefs["CreativeCommonsText"] = record.href
    return hrefs


def manifest_for(obj, options: ExportOptions) -> PackageContent:
    if isinstance(obj, Site):
        content = site_manifest(obj, include_passwords=options.include_passwords)
    elif isinstance(obj, Community):
        content = community_manifest(obj, options)
    elif isinstance(obj, Collection):
        content = collection_manifest(obj, options)
    else:
        content = item_manifest(obj, options)
    if options.manifest_only:
        # Children of a manifest-only package are manifest-only packages too.
        for child in content.manifest.children:
            child.href = child.href.removesuffix(".zip") + ".xml" if child.href else None
    return content
