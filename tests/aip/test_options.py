"""Packager options (``-o NAME=VALUE``), ingest modes and AIP settings, one behaviour per test.

Tests export from the generated repository into real zips (or, with
manifestOnly, METS files), and the ingest tests read those packages back. An
option value that is rejected must be named in the message and must leave no
package file, no new row and no stored file behind. Tampered packages are
exported ones with one change to their mets.xml.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.utils import timezone as django_timezone
from lxml import etree

from aip.mets.reader import read_manifest
from aip.mets.validation import validate_manifest
from aip.services.handles import handle_mint
from aip.services.manifests import bitstream_entry_name
from repository.models import (
    Bitstream,
    Bundle,
    Collection,
    Community,
    EPerson,
    Item,
    MetadataField,
    MetadataValue,
    ResourcePolicy,
)
from repository.passwords import dspace_hash_new
from tests.aip.conftest import (
    Before,
    before,
    ADMIN_EMAIL,
    database_snapshot,
    export_site,
    packager,
    repository_wipe,
    stored_files,
)

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
METS_NS = {"mets": "http://www.loc.gov/METS/", "xlink": "http://www.w3.org/1999/xlink"}
# Dates the generated repository gives every item. A submit replaces them with the time of the run.
DEMO_ACCESSIONED = "2024-03-01T10:00:00Z"
DEMO_AVAILABLE = "2024-03-01T10:00:00Z"
MODS_TITLE = "Title written only in the MODS section"
DEFAULT_SECTIONS = [
    "PREMIS",
    "DSPACE-ROLES",
    "DSpaceDepositLicense",
    "CreativeCommonsRDF",
    "CreativeCommonsText",
    "METSRIGHTS",
    "AIP-TECHMD",
]
DEFAULT_IGNORED_SECTIONS = ["DSpaceDepositLicense", "CreativeCommonsRDF", "CreativeCommonsText"]


# --- helpers ------------------------------------------------------------------------------


def package_name(object_type: str, handle: str, extension: str = "zip") -> str:
    return f"{object_type}@{handle.replace('/', '-')}.{extension}"


def option_arguments(options: tuple[str, ...]) -> list[str]:
    arguments: list[str] = []
    for option in options:
        arguments += ["-o", option]
    return arguments


def object_export(handle: str, path: Path, *options: str, recursive: bool = False) -> Path:
    """Export the object with ``handle`` to ``path`` with the given ``-o`` options."""
    flags = ["-d", "-a"] if recursive else ["-d"]
    packager(*flags, *option_arguments(options), "-i", handle, str(path))
    return path


def folder_files(folder: Path) -> list[str]:
    """Return every file name under ``folder``, hidden partial files included, or [] without the folder."""
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def item_package_names(folder: Path) -> list[str]:
    return [name for name in folder_files(folder) if name.startswith("ITEM@")]


def bitstream_folder_clear(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def mets_bytes(path: Path) -> bytes:
    """Return the METS document of a zip package or of a manifest-only ``.xml`` package."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return archive.read("mets.xml")
    return path.read_bytes()


def mets_root(path: Path) -> etree._Element:
    return etree.fromstring(mets_bytes(path))


def file_groups(path: Path) -> list[str]:
    return mets_root(path).xpath("mets:fileSec/mets:fileGrp/@USE", namespaces=METS_NS)


def zip_entries(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def zip_extract_files(path: Path, folder: Path) -> list[str]:
    """Copy every entry of a package except mets.xml into ``folder`` and return the entry names."""
    names = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name == "mets.xml":
                continue
            (folder / name).write_bytes(archive.read(name))
            names.append(name)
    return names


def replace_once(text: str, old: str, new: str) -> str:
    """Replace the first ``old`` in ``text``, failing the test when the manifest does not contain it."""
    assert old in text, f"the manifest does not contain {old!r}"
    return text.replace(old, new, 1)


def package_mets_rewrite(path: Path, change: Callable[[str], str]) -> None:
    """Rewrite the mets.xml of a zip package in place, keeping every other entry."""
    with zipfile.ZipFile(path) as archive:
        contents = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents:
            if name == "mets.xml":
                data = change(data.decode("utf-8")).encode("utf-8")
            archive.writestr(name, data)


def package_dim(path: Path) -> list[tuple]:
    """Return the values of the package's DIM dmdSec as (schema, element, qualifier, value, language)."""
    manifest = read_manifest(mets_bytes(path), source=path.name)
    dim = next(section.dim for section in manifest.descriptive if section.md_type == "DIM")
    return [
        (value.schema, value.element, value.qualifier or None, value.value, value.language or None) for value in dim
    ]


def package_dc_values(path: Path, element: str, qualifier: str | None = None) -> list[str]:
    return [
        value for schema, found_element, found_qualifier, value, _ in package_dim(path)
        if (schema, found_element, found_qualifier) == ("dc", element, qualifier)
    ]


def stored_dim(obj) -> list[tuple]:
    return [
        (value.field.schema.short_id, value.field.element, value.field.qualifier, value.value, value.language or None)
        for value in obj.metadata.select_related("field__schema").order_by("place", "id")
    ]


def dc_values(obj, element: str, qualifier: str | None = None) -> list[str]:
    return list(
        obj.metadata.filter(field__schema__short_id="dc", field__element=element, field__qualifier=qualifier)
        .order_by("place", "id")
        .values_list("value", flat=True)
    )


def package_file_count(path: Path) -> int:
    return len(mets_root(path).xpath("mets:fileSec/mets:fileGrp/mets:file", namespaces=METS_NS))


def stored_bytes(bitstream: Bitstream) -> bytes:
    with bitstream.file.open("rb") as stream:
        return stream.read()


def unmapped_item() -> Item:
    """Return the archived item with the lowest handle that is in one collection only."""
    return (
        Item.objects.filter(handle__isnull=False, mapped_collections__isnull=True, withdrawn=False, in_archive=True)
        .select_related("handle", "owning_collection__handle")
        .order_by("handle__suffix_number")
        .first()
    )


def mapped_item() -> Item:
    return Item.objects.filter(mapped_collections__isnull=False).select_related("handle").distinct().get()


def other_collection(item: Item) -> Collection:
    """Return a collection that neither owns ``item`` nor has it mapped."""
    excluded = [item.owning_collection_id, *item.mapped_collections.values_list("pk", flat=True)]
    return Collection.objects.exclude(pk__in=excluded).select_related("handle").order_by("name").first()


def item_delete(item: Item) -> None:
    """Delete an item with its bundles, bitstreams, metadata and policies, leaving its stored files."""
    Bundle.objects.filter(item=item).update(primary_bitstream=None)
    item.delete()


def new_objects(model, before_pks: set) -> list:
    return list(model.objects.exclude(pk__in=before_pks).select_related("handle"))



@dataclass
class ItemPackage:
    path: Path
    handle: str
    uuid: str
    collection: str


def item_package_export(item: Item, folder: Path, *options: str) -> ItemPackage:
    path = folder / package_name("ITEM", item.handle_string)
    object_export(item.handle_string, path, *options)
    return ItemPackage(
        path=path, handle=item.handle_string, uuid=str(item.uuid), collection=item.owning_collection.handle_string
    )


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def item(demo) -> Item:
    return unmapped_item()


@pytest.fixture
def export_dir(tmp_path) -> Path:
    return tmp_path / "export"


@pytest.fixture
def item_package(item, tmp_path) -> ItemPackage:
    """The package of an unmapped item, which stays in the repository."""
    return item_package_export(item, tmp_path / "packages")


@pytest.fixture
def lost_item(item, tmp_path) -> ItemPackage:
    """The package of an item that was then deleted, so a restore of it is valid."""
    package = item_package_export(item, tmp_path / "packages")
    item_delete(item)
    return package


# --- updatedAfter -------------------------------------------------------------------------


def collection_tree_export(collection: Collection, folder: Path, *options: str) -> Path:
    """Export a collection with its items into ``folder`` and return the path of the collection package."""
    path = folder / package_name("COLLECTION", collection.handle_string)
    return object_export(collection.handle_string, path, *options, recursive=True)


def collection_export(collection: Collection, folder: Path, *options: str) -> list[str]:
    """Export a collection with its items and return the names of the item packages written."""
    collection_tree_export(collection, folder, *options)
    return item_package_names(folder)


TIME_FORMATS = {
    "zone_z": lambda moment: moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "zone_offset": lambda moment: moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
    "no_zone": lambda moment: moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(),
}


@pytest.fixture
def distant_time_zone(settings) -> None:
    """Set Django's time zone far from UTC, so that a value without a zone read as local time would miss."""
    settings.TIME_ZONE = "Asia/Tokyo"


@pytest.mark.parametrize("time_format", TIME_FORMATS.values(), ids=TIME_FORMATS.keys())
def test_updated_after_equal_time_left_out(item, export_dir, distant_time_zone, time_format):
    value = time_format(item.last_modified)

    written = collection_export(item.owning_collection, export_dir, f"updatedAfter={value}")

    assert package_name("ITEM", item.handle_string) not in written


@pytest.mark.parametrize("time_format", TIME_FORMATS.values(), ids=TIME_FORMATS.keys())
def test_updated_after_second_earlier_exported(item, export_dir, distant_time_zone, time_format):
    value = time_format(item.last_modified - timedelta(seconds=1))

    written = collection_export(item.owning_collection, export_dir, f"updatedAfter={value}")

    assert package_name("ITEM", item.handle_string) in written


def test_updated_after_date_same_day_exported(item, export_dir):
    value = item.last_modified.astimezone(timezone.utc).date().isoformat()

    written = collection_export(item.owning_collection, export_dir, f"updatedAfter={value}")

    assert package_name("ITEM", item.handle_string) in written


def test_updated_after_date_next_day_left_out(item, export_dir):
    value = (item.last_modified.astimezone(timezone.utc).date() + timedelta(days=1)).isoformat()

    written = collection_export(item.owning_collection, export_dir, f"updatedAfter={value}")

    assert package_name("ITEM", item.handle_string) not in written


def test_updated_after_writes_every_container(demo, export_dir):
    export_site(export_dir)
    containers = [name for name in folder_files(export_dir) if not name.startswith("ITEM@")]
    shutil.rmtree(export_dir)

    packager("-d", "-a", "-o", "updatedAfter=2999-01-01", "-i", SITE_HANDLE, str(export_dir / SITE_PACKAGE))

    assert folder_files(export_dir) == containers


def test_updated_after_writes_no_unchanged_item(demo, export_dir):
    packager("-d", "-a", "-o", "updatedAfter=2999-01-01", "-i", SITE_HANDLE, str(export_dir / SITE_PACKAGE))

    assert item_package_names(export_dir) == []


def test_updated_after_reports_left_out_items(demo, export_dir, capsys):
    listed_items = Item.objects.filter(handle__isnull=False).count()

    packager("-d", "-a", "-o", "updatedAfter=2999-01-01", "-i", SITE_HANDLE, str(export_dir / SITE_PACKAGE))

    assert f"{listed_items} unchanged item(s) left out" in capsys.readouterr().out


def first_bitstream(item: Item, bundle_name: str) -> Bitstream:
    return Bitstream.objects.filter(bundle__item=item, bundle__name=bundle_name).order_by("position").first()


def metadata_add(item: Item) -> Item:
    field = MetadataField.objects.get(schema__short_id="dc", element="subject", qualifier=None)
    MetadataValue.objects.create(item=item, field=field, value="added later", place=100)
    return item


def metadata_edit(item: Item) -> Item:
    value = item.metadata.order_by("place").first()
    value.value = "edited later"
    value.save()
    return item


def metadata_delete(item: Item) -> Item:
    item.metadata.order_by("place").last().delete()
    return item


def bundle_add(item: Item) -> Item:
    Bundle.objects.create(item=item, name="THUMBNAIL", position=3)
    return item


def bundle_delete(item: Item) -> Item:
    item.bundles.get(name="TEXT").delete()
    return item


def bitstream_edit(item: Item) -> Item:
    bitstream = first_bitstream(item, "ORIGINAL")
    bitstream.description = "edited later"
    bitstream.save()
    return item


def bitstream_delete(item: Item) -> Item:
    first_bitstream(item, "TEXT").delete()
    return item


def item_policy_add(item: Item) -> Item:
    ResourcePolicy.objects.create(item=item, action=ResourcePolicy.Action.WRITE, eperson=EPerson.objects.first())
    return item


def bundle_policy_edit(item: Item) -> Item:
    policy = ResourcePolicy.objects.filter(bundle__item=item).first()
    policy.description = "edited later"
    policy.save()
    return item


def bitstream_policy_delete(item: Item) -> Item:
    ResourcePolicy.objects.filter(bitstream__bundle__item=item).first().delete()
    return item


def mapping_add(item: Item) -> Item:
    item.mapped_collections.add(other_collection(item))
    return item


def mapping_add_from_collection(item: Item) -> Item:
    other_collection(item).mapped_items.add(item)
    return item


def mapping_remove_from_collection(item: Item) -> Item:
    mapped = mapped_item()
    mapped.mapped_collections.get().mapped_items.remove(mapped)
    return mapped


def mapping_clear_from_collection(item: Item) -> Item:
    mapped = mapped_item()
    mapped.mapped_collections.get().mapped_items.clear()
    return mapped


ITEM_CHANGES = [
    pytest.param(metadata_add, id="metadata_added"),
    pytest.param(metadata_edit, id="metadata_edited"),
    pytest.param(metadata_delete, id="metadata_deleted"),
    pytest.param(bundle_add, id="bundle_added"),
    pytest.param(bundle_delete, id="bundle_deleted"),
    pytest.param(bitstream_edit, id="bitstream_edited"),
    pytest.param(bitstream_delete, id="bitstream_deleted"),
    pytest.param(item_policy_add, id="item_policy_added"),
    pytest.param(bundle_policy_edit, id="bundle_policy_edited"),
    pytest.param(bitstream_policy_delete, id="bitstream_policy_deleted"),
    pytest.param(mapping_add, id="mapping_added"),
    pytest.param(mapping_add_from_collection, id="mapping_added_from_collection"),
    pytest.param(mapping_remove_from_collection, id="mapping_removed_from_collection"),
    pytest.param(mapping_clear_from_collection, id="mapping_cleared_from_collection"),
]


@pytest.mark.parametrize("change", ITEM_CHANGES)
def test_updated_after_changed_item_exported(item, export_dir, change):
    latest = Item.objects.order_by("-last_modified").values_list("last_modified", flat=True).first()
    changed = change(item)

    written = collection_export(changed.owning_collection, export_dir, f"updatedAfter={latest.isoformat()}")

    assert written == [package_name("ITEM", changed.handle_string)]


def test_updated_after_collection_delete_unmaps_item(item, export_dir):
    temporary = Collection.objects.create(
        handle=handle_mint("COLLECTION"), community=item.owning_collection.community, name="Temporary"
    )
    item.mapped_collections.add(temporary)
    mapped_at = django_timezone.now()

    temporary.delete()

    written = collection_export(item.owning_collection, export_dir, f"updatedAfter={mapped_at.isoformat()}")
    assert written == [package_name("ITEM", item.handle_string)]


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "01/05/2024"])
def test_updated_after_invalid_rejected(demo, export_dir, value):
    with pytest.raises(CommandError) as error:
        packager("-d", "-a", "-o", f"updatedAfter={value}", "-i", SITE_HANDLE, str(export_dir / SITE_PACKAGE))

    message = str(error.value)
    assert "updatedAfter" in message
    assert repr(value) in message
    assert folder_files(export_dir) == []


# --- filterBundles and includeBundles -------------------------------------------------------


def original_entry_names(item: Item) -> list[str]:
    bitstreams = Bitstream.objects.filter(bundle__item=item, bundle__name="ORIGINAL").select_related("format")
    return sorted(bitstream_entry_name(bitstream) for bitstream in bitstreams)


def test_filter_bundles_leaves_out_file_groups(item, export_dir):
    package = item_package_export(item, export_dir, "filterBundles=TEXT,LICENSE")

    assert file_groups(package.path) == ["ORIGINAL"]


def test_filter_bundles_leaves_out_zip_entries(item, export_dir):
    package = item_package_export(item, export_dir, "filterBundles=TEXT,LICENSE")

    assert sorted(zip_entries(package.path)) == sorted(["mets.xml", *original_entry_names(item)])


def test_filter_bundles_drops_license_reference(item, export_dir):
    package = item_package_export(item, export_dir, "filterBundles=TEXT,LICENSE")

    assert "DSpaceDepositLicense" not in mets_bytes(package.path).decode("utf-8")


def test_unfiltered_export_has_license_reference(item, export_dir):
    package = item_package_export(item, export_dir)

    assert 'OTHERMDTYPE="DSpaceDepositLicense"' in mets_bytes(package.path).decode("utf-8")


@pytest.mark.parametrize("option", ["filterBundles=+ORIGINAL", "includeBundles=ORIGINAL"], ids=["plus", "include"])
def test_bundle_filter_keeps_only_original_groups(item, export_dir, option):
    package = item_package_export(item, export_dir, option)

    assert file_groups(package.path) == ["ORIGINAL"]


@pytest.mark.parametrize("option", ["filterBundles=+ORIGINAL", "includeBundles=ORIGINAL"], ids=["plus", "include"])
def test_bundle_filter_keeps_only_original_entries(item, export_dir, option):
    package = item_package_export(item, export_dir, option)

    assert sorted(zip_entries(package.path)) == sorted(["mets.xml", *original_entry_names(item)])


def test_bundle_options_combined_rejected(item, export_dir):
    path = export_dir / package_name("ITEM", item.handle_string)

    with pytest.raises(CommandError) as error:
        object_export(item.handle_string, path, "filterBundles=TEXT", "includeBundles=ORIGINAL")

    assert "filterBundles and includeBundles cannot be combined" in str(error.value)
    assert folder_files(export_dir) == []


@pytest.mark.parametrize(
    "option",
    ["filterBundles=", "filterBundles=+", "filterBundles=,", "includeBundles="],
    ids=["filter_empty", "plus_only", "commas_only", "include_empty"],
)
def test_bundle_list_empty_rejected(item, export_dir, option):
    path = export_dir / package_name("ITEM", item.handle_string)

    with pytest.raises(CommandError) as error:
        object_export(item.handle_string, path, option)

    assert "need a comma-separated list of bundle names" in str(error.value)
    assert folder_files(export_dir) == []


# --- passwords ----------------------------------------------------------------------------


@dataclass
class HashedPerson:
    email: str
    digest: str
    algorithm: str
    salt: str


@pytest.fixture
def hashed_person(demo) -> HashedPerson:
    person = EPerson.objects.get(email="ada.curator@example.org")
    person.password_hash, person.password_digest_algorithm, person.password_salt = dspace_hash_new("old secret")
    person.save()
    return HashedPerson(
        email=person.email,
        digest=person.password_hash,
        algorithm=person.password_digest_algorithm,
        salt=person.password_salt,
    )


def password_hashes(path: Path, email: str) -> list[etree._Element]:
    """Return the PasswordHash elements of the Person with ``email`` in a package's DSPACE-ROLES."""
    return mets_root(path).xpath(
        "//*[local-name()='Person'][*[local-name()='Email']=$email]/*[local-name()='PasswordHash']", email=email
    )


def test_passwords_true_writes_hash(hashed_person, export_dir):
    path = object_export(SITE_HANDLE, export_dir / SITE_PACKAGE, "passwords=true")

    hashes = password_hashes(path, hashed_person.email)
    assert [element.text for element in hashes] == [hashed_person.digest]
    assert hashes[0].get("digest") == hashed_person.algorithm
    assert hashes[0].get("salt") == hashed_person.salt


@pytest.mark.parametrize("options", [("passwords=false",), ()], ids=["false", "unset"])
def test_passwords_not_true_writes_no_hash(hashed_person, export_dir, options):
    path = object_export(SITE_HANDLE, export_dir / SITE_PACKAGE, *options)

    assert password_hashes(path, hashed_person.email) == []
    assert "PasswordHash" not in mets_bytes(path).decode("utf-8")


# --- option values rejected on export --------------------------------------------------------


@pytest.mark.parametrize("option", ["passwords", "unauthorized", "validate", "manifestOnly"])
def test_export_option_value_rejected(demo, export_dir, option):
    with pytest.raises(CommandError) as error:
        object_export(SITE_HANDLE, export_dir / SITE_PACKAGE, f"{option}=maybe")

    message = str(error.value)
    assert f"Option {option} must be" in message
    assert "'maybe'" in message
    assert folder_files(export_dir) == []


# --- validate -----------------------------------------------------------------------------


def test_export_validate_with_schema_dir_succeeds(item, export_dir, settings, schema_dir):
    settings.AIP_SCHEMA_DIR = str(schema_dir)

    package = item_package_export(item, export_dir, "validate=true")

    assert folder_files(export_dir) == [package.path.name]


def test_export_validate_output_is_schema_valid(item, export_dir, settings, schema_dir):
    settings.AIP_SCHEMA_DIR = str(schema_dir)

    package = item_package_export(item, export_dir, "validate=true")

    validate_manifest(mets_bytes(package.path), schema_dir=str(schema_dir), source=package.path.name)


def test_export_validate_schema_dir_without_schemas_fails(item, export_dir, settings, tmp_path):
    empty = tmp_path / "no-schemas"
    empty.mkdir()
    settings.AIP_SCHEMA_DIR = str(empty)

    with pytest.raises(CommandError) as error:
        item_package_export(item, export_dir, "validate=true")

    assert "dspace-aip-all.xsd" in str(error.value)
    assert folder_files(export_dir) == []


def test_export_validate_without_schema_dir_fails(item, export_dir, settings):
    settings.AIP_SCHEMA_DIR = ""

    with pytest.raises(CommandError) as error:
        item_package_export(item, export_dir, "validate=true")

    assert "AIP_SCHEMA_DIR" in str(error.value)
    assert folder_files(export_dir) == []


def test_export_without_schema_dir_skips_validation(item, export_dir, settings):
    settings.AIP_SCHEMA_DIR = ""

    package = item_package_export(item, export_dir)

    assert folder_files(export_dir) == [package.path.name]


def test_export_validates_by_default(item, export_dir, settings, tmp_path):
    empty = tmp_path / "no-schemas"
    empty.mkdir()
    settings.AIP_SCHEMA_DIR = str(empty)

    with pytest.raises(CommandError) as error:
        item_package_export(item, export_dir)

    assert "dspace-aip-all.xsd" in str(error.value)
    assert folder_files(export_dir) == []


def test_export_validate_false_skips_validation(item, export_dir, settings, tmp_path):
    empty = tmp_path / "no-schemas"
    empty.mkdir()
    settings.AIP_SCHEMA_DIR = str(empty)

    package = item_package_export(item, export_dir, "validate=false")

    assert folder_files(export_dir) == [package.path.name]


def unknown_attribute_add(text: str) -> str:
    return replace_once(text, "<metsHdr ", '<metsHdr UNKNOWNATTRIBUTE="x" ')


def test_ingest_validate_rejects_invalid_mets(lost_item, bitstream_storage, settings, schema_dir):
    settings.AIP_SCHEMA_DIR = str(schema_dir)
    package_mets_rewrite(lost_item.path, unknown_attribute_add)
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", "-o", "validate=true", str(lost_item.path))

    message = str(error.value)
    assert "is not valid against the AIP schemas" in message
    assert "UNKNOWNATTRIBUTE" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_ingest_without_validate_reads_invalid_mets(lost_item):
    package_mets_rewrite(lost_item.path, unknown_attribute_add)

    packager("-r", str(lost_item.path))

    assert Item.objects.filter(handle__handle=lost_item.handle).exists()


def test_ingest_validate_accepts_exported_package(lost_item, settings, schema_dir):
    settings.AIP_SCHEMA_DIR = str(schema_dir)

    packager("-r", "-o", "validate=true", str(lost_item.path))

    assert Item.objects.filter(handle__handle=lost_item.handle).exists()


def test_ingest_validate_without_schema_dir_fails(lost_item, bitstream_storage, settings):
    settings.AIP_SCHEMA_DIR = ""
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", "-o", "validate=true", str(lost_item.path))

    assert "AIP_SCHEMA_DIR" in str(error.value)
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- manifestOnly -------------------------------------------------------------------------


def test_manifest_only_export_writes_xml_only(item, export_dir):
    collection = item.owning_collection
    path = export_dir / package_name("COLLECTION", collection.handle_string, "xml")

    object_export(collection.handle_string, path, "manifestOnly=true", recursive=True)

    item_names = [package_name("ITEM", other.handle_string, "xml") for other in collection.owned_items.all()]
    assert folder_files(export_dir) == sorted([path.name, *item_names])


def test_manifest_only_child_references_xml(item, export_dir):
    collection = item.owning_collection
    path = export_dir / package_name("COLLECTION", collection.handle_string, "xml")

    object_export(collection.handle_string, path, "manifestOnly=true", recursive=True)

    references = mets_root(path).xpath(
        "mets:structMap[@LABEL='DSpace Object']//mets:mptr[@LOCTYPE='URL']/@xlink:href", namespaces=METS_NS
    )
    assert sorted(references) == item_package_names(export_dir)
    assert all(reference.endswith(".xml") for reference in references)


def test_manifest_only_file_references_plain_names(item, export_dir):
    path = object_export(
        item.handle_string, export_dir / package_name("ITEM", item.handle_string, "xml"), "manifestOnly=true"
    )

    references = mets_root(path).xpath("mets:fileSec//mets:FLocat/@xlink:href", namespaces=METS_NS)
    expected = [bitstream_entry_name(bitstream) for bitstream in Bitstream.objects.filter(bundle__item=item)]
    assert sorted(references) == sorted(expected)


def bitstream_records() -> list[tuple]:
    """Return (owner handle, bundle, name, MD5) of every bitstream, logos included.

    A logo is recorded without its name, because a package states none and a restore names it after its entry.
    """
    records = []
    for bitstream in Bitstream.objects.select_related("bundle__item__handle"):
        if bitstream.bundle_id:
            bundle = bitstream.bundle
            records.append((bundle.item.handle_string, bundle.name, bitstream.name, bitstream.checksum))
            continue
        owner = Community.objects.filter(logo=bitstream).first() or Collection.objects.filter(logo=bitstream).first()
        records.append((owner.handle_string, "LOGO", "", bitstream.checksum))
    return sorted(records)


@dataclass
class ManifestOnlyRestore:
    handles: list[str]
    bitstreams: list[tuple]


@pytest.fixture
def manifest_only_restore(demo, tmp_path, bitstream_storage) -> ManifestOnlyRestore:
    """A manifest-only site export with the files of a zip export beside it, restored into a wiped repository."""
    zips = tmp_path / "zips"
    export_site(zips)
    folder = tmp_path / "manifests"
    packager("-d", "-a", "-o", "manifestOnly=true", "-i", SITE_HANDLE, str(folder / "SITE@123456789-0.xml"))
    for package in zips.glob("*.zip"):
        zip_extract_files(package, folder)
    handles = sorted(Item.objects.filter(handle__isnull=False).values_list("handle__handle", flat=True))
    bitstreams = bitstream_records()

    repository_wipe()
    bitstream_folder_clear(bitstream_storage)
    packager("-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(folder / "SITE@123456789-0.xml"))
    return ManifestOnlyRestore(handles=handles, bitstreams=bitstreams)


def test_manifest_only_restore_items(manifest_only_restore):
    restored = sorted(Item.objects.filter(handle__isnull=False).values_list("handle__handle", flat=True))

    assert restored == manifest_only_restore.handles


def test_manifest_only_restore_bitstreams(manifest_only_restore):
    assert bitstream_records() == manifest_only_restore.bitstreams


def test_manifest_only_restore_file_contents(manifest_only_restore):
    mismatched = [
        bitstream.name
        for bitstream in Bitstream.objects.all()
        if hashlib.md5(stored_bytes(bitstream)).hexdigest() != bitstream.checksum
    ]

    assert Bitstream.objects.exists()
    assert mismatched == []


@dataclass
class ManifestOnlyItem:
    path: Path
    handle: str
    files: list[str]


@pytest.fixture
def manifest_only_item(item, tmp_path) -> ManifestOnlyItem:
    """A manifest-only item package with its files beside it, taken before the item was deleted."""
    zipped = item_package_export(item, tmp_path / "zips")
    folder = tmp_path / "manifest"
    path = folder / package_name("ITEM", item.handle_string, "xml")
    object_export(item.handle_string, path, "manifestOnly=true")
    files = zip_extract_files(zipped.path, folder)
    handle = item.handle_string
    item_delete(item)
    return ManifestOnlyItem(path=path, handle=handle, files=files)


def test_manifest_only_item_restores(manifest_only_item):
    packager("-r", str(manifest_only_item.path))

    restored = Item.objects.get(handle__handle=manifest_only_item.handle)
    assert restored.bundles.count() == 3
    assert Bitstream.objects.filter(bundle__item=restored).count() == len(manifest_only_item.files)


def test_manifest_only_option_reads_other_name(manifest_only_item):
    renamed = manifest_only_item.path.with_suffix(".mets")
    manifest_only_item.path.rename(renamed)

    packager("-r", "-o", "manifestOnly=true", str(renamed))

    assert Item.objects.filter(handle__handle=manifest_only_item.handle).exists()


def test_manifest_only_missing_file_fails(manifest_only_item, bitstream_storage):
    missing = next(name for name in manifest_only_item.files if name.endswith(".csv"))
    (manifest_only_item.path.parent / missing).unlink()
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", str(manifest_only_item.path))

    assert repr(missing) in str(error.value)
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_manifest_only_reference_with_slash_unsafe(manifest_only_item, bitstream_storage):
    target = next(name for name in manifest_only_item.files if name.endswith(".csv"))
    text = manifest_only_item.path.read_text(encoding="utf-8")
    manifest_only_item.path.write_text(replace_once(text, f'href="{target}"', f'href="sub/{target}"'), encoding="utf-8")
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", str(manifest_only_item.path))

    message = str(error.value)
    assert "outside its folder" in message
    assert repr(f"sub/{target}") in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- dmd ----------------------------------------------------------------------------------


@pytest.fixture
def two_dmd_package(lost_item) -> ItemPackage:
    """A package of a deleted item whose MODS section carries a title its DIM section does not."""
    title = package_dc_values(lost_item.path, "title")[0]
    old, new = f"<mods:title>{title}</mods:title>", f"<mods:title>{MODS_TITLE}</mods:title>"
    package_mets_rewrite(lost_item.path, lambda text: replace_once(text, old, new))
    return lost_item


def test_dmd_default_reads_dim(two_dmd_package):
    dim_titles = package_dc_values(two_dmd_package.path, "title")

    packager("-r", str(two_dmd_package.path))

    assert dc_values(Item.objects.get(handle__handle=two_dmd_package.handle), "title") == dim_titles


def test_dmd_mods_reads_mods_title(two_dmd_package):
    packager("-r", "-o", "dmd=MODS", str(two_dmd_package.path))

    assert dc_values(Item.objects.get(handle__handle=two_dmd_package.handle), "title") == [MODS_TITLE]


def test_dmd_mods_leaves_out_dim_only_fields(two_dmd_package):
    packager("-r", "-o", "dmd=MODS", str(two_dmd_package.path))

    restored = Item.objects.get(handle__handle=two_dmd_package.handle)
    assert not restored.metadata.filter(field__schema__short_id="local").exists()


# --- ignoreHandle, ignoreParent, skipIfParentMissing, createMetadataFields -------------------


def test_ignore_handle_restore_mints_new_handle(lost_item):
    packager("-r", "-o", "ignoreHandle=true", str(lost_item.path))

    restored = Item.objects.select_related("handle").get(uuid=lost_item.uuid)
    assert restored.handle_string != lost_item.handle
    assert restored.handle_string.startswith("123456789/")


def test_ignore_handle_restore_leaves_old_handle_free(lost_item):
    packager("-r", "-o", "ignoreHandle=true", str(lost_item.path))

    assert not Item.objects.filter(handle__handle=lost_item.handle).exists()


def test_ignore_parent_restore_uses_parent_option(lost_item):
    target = Collection.objects.exclude(handle__handle=lost_item.collection).select_related("handle").first()

    packager("-r", "-o", "ignoreParent=true", "-p", target.handle_string, str(lost_item.path))

    assert Item.objects.get(handle__handle=lost_item.handle).owning_collection == target


def test_restore_without_ignore_parent_keeps_package_parent(lost_item):
    target = Collection.objects.exclude(handle__handle=lost_item.collection).select_related("handle").first()

    packager("-r", "-p", target.handle_string, str(lost_item.path))

    restored = Item.objects.select_related("owning_collection__handle").get(handle__handle=lost_item.handle)
    assert restored.owning_collection.handle_string == lost_item.collection


@pytest.fixture
def orphan_item(lost_item) -> ItemPackage:
    """The package of a deleted item, changed to name a parent handle that is not in the repository."""
    old = f'LOCTYPE="HANDLE" xlink:type="simple" xlink:href="{lost_item.collection}"'
    new = 'LOCTYPE="HANDLE" xlink:type="simple" xlink:href="123456789/999"'
    package_mets_rewrite(lost_item.path, lambda text: replace_once(text, old, new))
    return lost_item


def test_skip_if_parent_missing_skips_item(orphan_item, bitstream_storage):
    state = before(bitstream_storage)

    packager("-r", "-o", "skipIfParentMissing=true", str(orphan_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_skip_if_parent_missing_warns(orphan_item, capsys):
    packager("-r", "-o", "skipIfParentMissing=true", str(orphan_item.path))

    assert "WARNING: Could not find a parent DSpaceObject referenced as '123456789/999'" in capsys.readouterr().err


def test_skip_if_parent_missing_skips_missing_child(item, tmp_path, capsys):
    collection = item.owning_collection
    folder = tmp_path / "collection"
    path = collection_tree_export(collection, folder)
    missing = package_name("ITEM", item.handle_string)
    (folder / missing).unlink()

    packager("-r", "-a", "-f", "-u", "-o", "skipIfParentMissing=true", str(path))

    assert f"WARNING: Child package {missing} is missing" in capsys.readouterr().err


def test_create_metadata_fields_false_rejects_unknown_field(lost_item, bitstream_storage):
    field = '<dim:field mdschema="dc" element="shelfmark">QA 76.9</dim:field>\n</dim:dim>'
    package_mets_rewrite(lost_item.path, lambda text: replace_once(text, "</dim:dim>", field))
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", "-o", "createMetadataFields=false", str(lost_item.path))

    assert "Metadata field dc.shelfmark" in str(error.value)
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


@pytest.mark.parametrize(
    "option",
    ["ignoreHandle", "ignoreParent", "skipIfParentMissing", "createMetadataFields", "validate", "manifestOnly"],
)
def test_ingest_option_value_rejected(lost_item, bitstream_storage, option):
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", "-o", f"{option}=maybe", str(lost_item.path))

    message = str(error.value)
    assert f"Option {option} must be true or false" in message
    assert "'maybe'" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- submit and restore of the same item package ------------------------------------------------


@dataclass
class Submitted:
    item: Item
    package: ItemPackage
    started: datetime


def item_submit(package: ItemPackage, *extra: str, collection: str | None = None) -> Item:
    """Submit ``package`` into ``collection`` (by default its own) and return the new item."""
    existing = set(Item.objects.values_list("pk", flat=True))
    packager("-s", *extra, "-p", collection or package.collection, str(package.path))
    (created,) = new_objects(Item, existing)
    return created


def collection_license_set(collection: Collection, text: str | None) -> None:
    """Replace the deposit licence (dc.rights.license) of ``collection``, or remove it when ``text`` is None."""
    collection.metadata.filter(field__element="rights", field__qualifier="license").delete()
    if text is not None:
        field = MetadataField.objects.get(schema__short_id="dc", element="rights", qualifier="license")
        MetadataValue.objects.create(collection=collection, field=field, value=text, place=10)


@pytest.fixture
def submitted(item_package) -> Submitted:
    started = django_timezone.now().replace(microsecond=0)
    return Submitted(item=item_submit(item_package), package=item_package, started=started)


def license_bitstreams(item: Item) -> list[Bitstream]:
    return list(Bitstream.objects.filter(bundle__item=item, bundle__name="LICENSE").order_by("position", "id"))


def test_submit_adds_license_to_package_license(submitted):
    names = [bitstream.name for bitstream in license_bitstreams(submitted.item)]

    assert names == ["license.txt", "license.txt"]


def test_submit_license_from_parent_collection(item_package, item):
    target = other_collection(item)
    collection_license_set(target, "Deposit licence of the target collection.")

    submitted_item = item_submit(item_package, collection=target.handle_string)

    added = license_bitstreams(submitted_item)[-1]
    assert stored_bytes(added).decode("utf-8") == "Deposit licence of the target collection."


def test_submit_license_default_setting(item_package, item, settings):
    settings.AIP_DEFAULT_LICENSE = "Default deposit licence of this test."
    target = other_collection(item)
    collection_license_set(target, None)

    submitted_item = item_submit(item_package, collection=target.handle_string)

    added = license_bitstreams(submitted_item)[-1]
    assert stored_bytes(added).decode("utf-8") == "Default deposit licence of this test."


def test_submit_license_bundle_created(item, tmp_path):
    package = item_package_export(item, tmp_path / "packages", "filterBundles=LICENSE")

    submitted_item = item_submit(package)

    assert [bitstream.name for bitstream in license_bitstreams(submitted_item)] == ["license.txt"]


def test_submit_replaces_accessioned(submitted):
    values = dc_values(submitted.item, "date", "accessioned")

    assert len(values) == 1
    assert values[0] != DEMO_ACCESSIONED


def test_submit_replaces_available(submitted):
    values = dc_values(submitted.item, "date", "available")

    assert len(values) == 1
    assert values[0] != DEMO_AVAILABLE


def test_submit_dates_are_run_time(submitted):
    accessioned = datetime.fromisoformat(dc_values(submitted.item, "date", "accessioned")[0])
    available = datetime.fromisoformat(dc_values(submitted.item, "date", "available")[0])

    assert accessioned >= submitted.started
    assert available == accessioned


def test_submit_keeps_package_issued(submitted):
    package_issued = package_dc_values(submitted.package.path, "date", "issued")

    assert dc_values(submitted.item, "date", "issued") == package_issued


def test_submit_adds_issued_when_missing(item, tmp_path):
    item.metadata.filter(field__element="date", field__qualifier="issued").delete()
    package = item_package_export(item, tmp_path / "packages")

    submitted_item = item_submit(package)

    today = django_timezone.now().astimezone(timezone.utc).date().isoformat()
    assert dc_values(submitted_item, "date", "issued") == [today]


def test_submit_provenance_submitted_by(submitted):
    lines = dc_values(submitted.item, "description", "provenance")

    assert lines[0].startswith("Submitted by Ada Curator (ada.curator@example.org) on ")


def test_submit_provenance_made_available(submitted):
    lines = dc_values(submitted.item, "description", "provenance")

    assert lines[-1].startswith("Made available in DSpace on ")


def test_submit_provenance_two_lines(submitted):
    assert len(dc_values(submitted.item, "description", "provenance")) == 2


def package_entry_replace(path: Path, name: str, data: bytes) -> None:
    """Rewrite a zip package in place with the content of entry ``name`` replaced by ``data``."""
    with zipfile.ZipFile(path) as archive:
        contents = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, content in contents:
            archive.writestr(entry, data if entry == name else content)


def test_submit_failure_deletes_license_files(item, tmp_path, bitstream_storage):
    collection = item.owning_collection
    folder = tmp_path / "collection"
    path = collection_tree_export(collection, folder)
    last_item = collection.owned_items.select_related("handle").order_by("handle__suffix_number").last()
    last_package = folder / package_name("ITEM", last_item.handle_string)
    csv_entry = next(name for name in zip_entries(last_package) if name.endswith(".csv"))
    with zipfile.ZipFile(last_package) as archive:
        damaged = archive.read(csv_entry).replace(b"id,value", b"ID,VALUE")
    package_entry_replace(last_package, csv_entry, damaged)
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-s", "-a", "-p", collection.community.handle_string, str(path))

    assert csv_entry in str(error.value)
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_restore_metadata_equals_package(lost_item):
    packager("-r", str(lost_item.path))

    assert stored_dim(Item.objects.get(handle__handle=lost_item.handle)) == package_dim(lost_item.path)


def test_restore_keeps_package_last_modified(lost_item):
    stated = mets_root(lost_item.path).xpath("mets:metsHdr/@LASTMODDATE", namespaces=METS_NS)[0]

    packager("-r", str(lost_item.path))

    restored = Item.objects.get(handle__handle=lost_item.handle)
    assert restored.last_modified == datetime.fromisoformat(stated).replace(tzinfo=timezone.utc)


def test_restore_adds_no_bitstream(lost_item):
    packager("-r", str(lost_item.path))

    restored = Item.objects.get(handle__handle=lost_item.handle)
    assert Bitstream.objects.filter(bundle__item=restored).count() == package_file_count(lost_item.path)


def test_submit_community_under_site_top_level(demo, tmp_path):
    community = Community.objects.filter(parent__isnull=False).select_related("handle").first()
    path = object_export(community.handle_string, tmp_path / package_name("COMMUNITY", community.handle_string))
    existing = set(Community.objects.values_list("pk", flat=True))

    packager("-s", "-p", SITE_HANDLE, str(path))

    (created,) = new_objects(Community, existing)
    assert created.parent is None
    assert created.handle_string != community.handle_string


def test_submit_no_workflow_installs_item(item_package):
    collection = Collection.objects.get(handle__handle=item_package.collection)
    assert (collection.workflow_step_1, collection.workflow_step_2, collection.workflow_step_3) == (None, None, None)

    submitted_item = item_submit(item_package, "-w")

    assert submitted_item.in_archive is True


# --- settings -----------------------------------------------------------------------------


def dmd_types(path: Path) -> list[str]:
    wraps = mets_root(path).xpath("mets:dmdSec/mets:mdWrap", namespaces=METS_NS)
    return [wrap.get("OTHERMDTYPE") or wrap.get("MDTYPE") for wrap in wraps]


def test_disseminate_dmd_dim_only(item, export_dir, settings):
    settings.AIP_DISSEMINATE_DMD = ["DIM"]

    package = item_package_export(item, export_dir)

    assert dmd_types(package.path) == ["DIM"]


def test_disseminate_dmd_default_writes_mods_and_dim(item, export_dir):
    package = item_package_export(item, export_dir)

    assert dmd_types(package.path) == ["MODS", "DIM"]


def test_disseminate_sections_without_metsrights(item, export_dir, settings):
    settings.AIP_DISSEMINATE_SECTIONS = [name for name in DEFAULT_SECTIONS if name != "METSRIGHTS"]

    package = item_package_export(item, export_dir)

    rights = mets_root(package.path).xpath("//mets:rightsMD/mets:mdWrap[@OTHERMDTYPE='METSRIGHTS']", namespaces=METS_NS)
    assert rights == []


def test_ingest_ignored_metsrights_restores_no_policies(lost_item, settings):
    settings.AIP_INGEST_IGNORED_SECTIONS = [*DEFAULT_IGNORED_SECTIONS, "METSRIGHTS"]

    packager("-r", str(lost_item.path))

    restored = Item.objects.get(handle__handle=lost_item.handle)
    assert ResourcePolicy.objects.filter(item=restored).count() == 0
    assert ResourcePolicy.objects.filter(bundle__item=restored).count() == 0
    assert ResourcePolicy.objects.filter(bitstream__bundle__item=restored).count() == 0


MISSPELT_SETTINGS = [
    pytest.param("AIP_DISSEMINATE_DMD", ["MODS", "DIMM"], "DIMM", id="dmd"),
    pytest.param("AIP_DISSEMINATE_SECTIONS", [*DEFAULT_SECTIONS, "METSRIGTHS"], "METSRIGTHS", id="sections"),
    pytest.param(
        "AIP_INGEST_IGNORED_SECTIONS", [*DEFAULT_IGNORED_SECTIONS, "METSRIGTHS"], "METSRIGTHS", id="ignored_sections"
    ),
]


@pytest.mark.parametrize(("setting", "value", "misspelt"), MISSPELT_SETTINGS)
def test_check_reports_misspelt_section(db, settings, setting, value, misspelt):
    setattr(settings, setting, value)

    with pytest.raises(SystemCheckError) as error:
        call_command("check")

    assert f"{setting} names {misspelt!r}" in str(error.value)


def test_packager_checks_section_names(item, export_dir, settings):
    settings.AIP_DISSEMINATE_SECTIONS = [*DEFAULT_SECTIONS, "METSRIGTHS"]
    path = export_dir / package_name("ITEM", item.handle_string)

    with pytest.raises(SystemCheckError) as error:
        call_command(
            "packager", "-t", "AIP", "-e", ADMIN_EMAIL, "-d", "-i", item.handle_string, str(path), skip_checks=False
        )

    assert "'METSRIGTHS'" in str(error.value)
    assert folder_files(export_dir) == []


@pytest.mark.django_db
def test_dmd_unknown_value_rejected(admin, tmp_path):
    with pytest.raises(CommandError, match="Option dmd must be one of DIM, MODS, not 'MOD'"):
        packager("-r", "-o", "dmd=MOD", str(tmp_path / "ITEM@123456789-1.zip"))


@pytest.mark.django_db
def test_updated_after_empty_rejected(admin, tmp_path):
    target = tmp_path / "SITE@123456789-0.zip"

    with pytest.raises(CommandError, match="Option updatedAfter must be an ISO-8601 date"):
        packager("-d", "-a", "-i", "123456789/0", "-o", "updatedAfter=", str(target))
    assert not target.exists()


@pytest.mark.parametrize(
    ("database_url", "message"),
    [
        ("sqlite:///{tmp}/new.sqlite3", "lacks"),
        ("postgres://postgres@127.0.0.1:1/aip_backup", "The database cannot be read"),
    ],
)
def test_packager_database_not_ready(tmp_path, database_url, message):
    env = dict(os.environ, DATABASE_URL=database_url.format(tmp=tmp_path), REDIS_URL="")
    manage = [sys.executable, str(Path(django_settings.BASE_DIR) / "manage.py")]

    done = subprocess.run(
        [*manage, "packager", "-d", "-t", "AIP", "-e", "admin@example.org", "-i", "123456789/0",
         str(tmp_path / "SITE@123456789-0.zip")],
        env=env, capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "SITE@123456789-0.zip").exists()
