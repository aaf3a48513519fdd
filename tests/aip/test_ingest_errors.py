"""Ingest failures, and the keep (-k) and replace (-f) modes, on a generated repository.

Every rejected input must raise one ``CommandError`` that names the value at
fault, and must leave the database and the bitstream folder as they were. The
tampered packages are copies of exported ones, rewritten with the same entry
names and one change each.
"""
from __future__ import annotations

import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management.base import CommandError
from lxml import etree

from repository.models import (
    Bitstream,
    BitstreamFormat,
    Bundle,
    Collection,
    Community,
    EPerson,
    Group,
    Item,
    MetadataField,
    MetadataValue,
    ResourcePolicy,
    bitstream_storage,
)
from tests.aip.conftest import Before, before, database_snapshot, export_site, packager, repository_wipe, stored_files

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
METS_NS = {"mets": "http://www.loc.gov/METS/", "xlink": "http://www.w3.org/1999/xlink"}


# --- helpers ------------------------------------------------------------------------------


def package_name(object_type: str, handle: str) -> str:
    return f"{object_type}@{handle.replace('/', '-')}.zip"


def bitstream_folder_clear(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def package_rewrite(
    path: Path,
    *,
    mets: Callable[[str], str] | None = None,
    entries: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Rewrite a package in place with the same entry names, applying the given changes.

    ``mets`` rewrites the mets.xml text, ``entries`` replaces entry contents,
    ``drop`` leaves entries out and ``extra`` adds entries at the end.
    """
    with zipfile.ZipFile(path) as archive:
        contents = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents:
            if name in drop:
                continue
            if name == "mets.xml" and mets is not None:
                data = mets(data.decode("utf-8")).encode("utf-8")
            if entries and name in entries:
                data = entries[name]
            archive.writestr(name, data)
        for name, data in (extra or {}).items():
            archive.writestr(zipfile.ZipInfo(name), data)


def replace_once(text: str, old: str, new: str) -> str:
    """Replace the first ``old`` in ``text``, failing the test when the package does not contain it."""
    assert old in text, f"the manifest does not contain {old!r}"
    return text.replace(old, new, 1)


def entry_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def entry_bytes(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def first_pdf_entry(path: Path) -> str:
    return next(name for name in entry_names(path) if name.endswith(".pdf"))


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def walk_order(folder: Path, top: str) -> list[str]:
    """Return package names in the order a recursive ingest reads them: depth first, each once."""
    order: list[str] = []
    pending = [top]
    while pending:
        name = pending.pop()
        if name in order:
            continue
        order.append(name)
        root = etree.fromstring(entry_bytes(folder / name, "mets.xml"))
        hrefs = root.xpath(
            "mets:structMap[@LABEL='DSpace Object']/mets:div/mets:div/mets:mptr[@LOCTYPE='URL']/@xlink:href",
            namespaces=METS_NS,
        )
        pending.extend(reversed(hrefs))
    return order


def item_delete(item: Item) -> None:
    """Delete an item with its bundles, bitstreams, metadata and policies, leaving its stored files."""
    Bundle.objects.filter(item=item).update(primary_bitstream=None)
    item.delete()


def item_files(item: Item) -> list[str]:
    return sorted(Bitstream.objects.filter(bundle__item=item).values_list("file", flat=True))



@dataclass
class ItemPackage:
    path: Path
    handle: str
    uuid: str
    collection: str
    community: str


def unmapped_item() -> Item:
    return (
        Item.objects.filter(handle__isnull=False, mapped_collections__isnull=True, withdrawn=False)
        .select_related("handle", "owning_collection__handle", "owning_collection__community__handle")
        .order_by("handle__suffix_number")
        .first()
    )


def item_package_export(item: Item, folder: Path) -> ItemPackage:
    path = folder / package_name("ITEM", item.handle_string)
    packager("-d", "-i", item.handle_string, str(path))
    return ItemPackage(
        path=path,
        handle=item.handle_string,
        uuid=str(item.uuid),
        collection=item.owning_collection.handle_string,
        community=item.owning_collection.community.handle_string,
    )


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def item_package(demo, tmp_path) -> ItemPackage:
    """The package of an unmapped item of the generated repository, which keeps the item."""
    return item_package_export(unmapped_item(), tmp_path / "packages")


@pytest.fixture
def lost_item(demo, tmp_path) -> ItemPackage:
    """The package of an item that was then deleted, so a restore of it would be valid."""
    item = unmapped_item()
    package = item_package_export(item, tmp_path / "packages")
    item_delete(item)
    return package


@pytest.fixture
def site_folder(demo, tmp_path) -> Path:
    """A whole-site export of the generated repository, which stays in the database."""
    folder = tmp_path / "export"
    export_site(folder)
    return folder


@pytest.fixture
def wiped_site_folder(site_folder, bitstream_storage) -> Path:
    """A whole-site export, with the database wiped and the bitstream folder emptied after it."""
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)
    return site_folder


def site_restore(folder: Path, *extra: str) -> None:
    packager("-r", "-a", "-f", "-u", *extra, "-i", SITE_HANDLE, str(folder / SITE_PACKAGE))


# --- a package that is fine -----------------------------------------------------------------


def test_untouched_package_restores(lost_item):
    packager("-r", str(lost_item.path))

    assert Item.objects.filter(handle__handle=lost_item.handle).count() == 1


# --- restore over existing content ---------------------------------------------------------


def test_restore_existing_site_fails(site_folder, bitstream_storage):
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", "-a", "-u", "-i", SITE_HANDLE, str(site_folder / SITE_PACKAGE))

    message = str(error.value)
    assert "Group Administrator already exists" in message
    assert "-r -f" in message
    assert "-r -k" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_restore_existing_community_fails(site_folder, bitstream_storage):
    community = Community.objects.filter(parent__isnull=True).select_related("handle").order_by("name").first()
    name = package_name("COMMUNITY", community.handle_string)
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", "-a", str(site_folder / name))

    message = str(error.value)
    assert f"COMMUNITY {community.handle_string} from package {name} already exists" in message
    assert "-r -k" in message
    assert "-r -f" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_restore_existing_item_fails(item_package, bitstream_storage):
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"ITEM {item_package.handle} from package")):
        packager("-r", str(item_package.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- failure in the middle of a recursive run ---------------------------------------------


@pytest.fixture
def fifth_item_corrupted(wiped_site_folder) -> str:
    """Change one file of the fifth item package that a recursive restore reads, and return its name."""
    items = [name for name in walk_order(wiped_site_folder, SITE_PACKAGE) if name.startswith("ITEM@")]
    name = items[4]
    path = wiped_site_folder / name
    pdf = first_pdf_entry(path)
    package_rewrite(path, entries={pdf: flip_last_byte(entry_bytes(path, pdf))})
    return name


def test_recursive_failure_names_package(wiped_site_folder, fifth_item_corrupted):
    with pytest.raises(CommandError, match=re.escape(f"Package {fifth_item_corrupted}: file ")):
        site_restore(wiped_site_folder)


def test_recursive_failure_rolls_back(wiped_site_folder, fifth_item_corrupted, bitstream_storage):
    state = before(bitstream_storage)

    with pytest.raises(CommandError):
        site_restore(wiped_site_folder)

    assert database_snapshot() == state.database
    assert Item.objects.count() == 0


def test_recursive_failure_deletes_stored_files(wiped_site_folder, fifth_item_corrupted, bitstream_storage):
    with pytest.raises(CommandError):
        site_restore(wiped_site_folder)

    assert stored_files(bitstream_storage) == []


# --- keep existing (-r -k) ------------------------------------------------------------------


@dataclass
class KeepRun:
    output: str
    kept_top: str
    created_top: str
    deleted_item: str
    mapped_item: str


def top_community(collection: Collection) -> Community:
    community = collection.community
    while community.parent_id:
        community = community.parent
    return community


@pytest.fixture
def keep_run(site_folder, bitstream_storage, capsys) -> KeepRun:
    """Restore the subtree of the mapped item's owner, delete another item of it, then run -r -a -k on the site.

    The deleted item's absence afterwards shows that the subtree of an existing object is skipped.
    """
    mapped = Item.objects.filter(mapped_collections__isnull=False).select_related("handle").get()
    kept_top = top_community(mapped.owning_collection)
    deleted = Item.objects.filter(owning_collection=mapped.owning_collection).exclude(pk=mapped.pk).first()
    # Handles are read before the wipe deletes their rows.
    run = KeepRun(
        output="",
        kept_top=kept_top.handle_string,
        created_top=Community.objects.filter(parent__isnull=True).exclude(pk=kept_top.pk).get().handle_string,
        deleted_item=deleted.handle_string,
        mapped_item=mapped.handle_string,
    )
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)
    packager("-r", "-f", "-u", "-i", SITE_HANDLE, str(site_folder / SITE_PACKAGE))
    packager("-r", "-a", str(site_folder / package_name("COMMUNITY", run.kept_top)))
    item_delete(Item.objects.get(handle__handle=run.deleted_item))
    capsys.readouterr()

    packager("-r", "-a", "-k", "-u", str(site_folder / SITE_PACKAGE))

    run.output = capsys.readouterr().out
    return run


def test_keep_reports_skipped_community(keep_run):
    assert f"Skipped COMMUNITY {keep_run.kept_top} (exists; its children are skipped too)" in keep_run.output


def test_keep_skips_subtree(keep_run):
    assert not Item.objects.filter(handle__handle=keep_run.deleted_item).exists()


def test_keep_creates_missing(keep_run):
    assert f"Created COMMUNITY {keep_run.created_top}" in keep_run.output
    assert Item.objects.filter(owning_collection__community__handle__handle=keep_run.created_top).exists()


def test_keep_reports_skipped_item(keep_run):
    assert f"Skipped ITEM {keep_run.mapped_item} (exists; its children are skipped too)" in keep_run.output


def test_keep_maps_skipped_item(keep_run):
    item = Item.objects.get(handle__handle=keep_run.mapped_item)

    assert item.mapped_collections.filter(community__handle__handle=keep_run.created_top).exists()


def test_keep_unchanged_repository(site_folder, bitstream_storage, capsys):
    state = before(bitstream_storage)

    packager("-r", "-a", "-k", "-u", str(site_folder / SITE_PACKAGE))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files
    assert "0 created" in capsys.readouterr().out


def test_keep_reports_site_unchanged(site_folder, capsys):
    packager("-r", "-a", "-k", "-u", str(site_folder / SITE_PACKAGE))

    output = capsys.readouterr().out
    assert f"Replaced SITE {SITE_HANDLE}" not in output
    assert "0 replaced" in output


# --- replace (-r -f) ------------------------------------------------------------------------


def item_content(item: Item) -> dict[str, object]:
    """Return what an item package carries: bundles with their files, metadata and policies."""
    bundles = [
        (
            bundle.name,
            [(str(b.uuid), b.name, b.checksum, b.size_bytes) for b in bundle.bitstreams.order_by("position")],
            str(bundle.primary_bitstream.uuid) if bundle.primary_bitstream else None,
        )
        for bundle in item.bundles.order_by("position")
    ]
    metadata = [
        (str(value.field), value.value, value.language, value.authority, value.confidence)
        for value in item.metadata.select_related("field__schema").order_by("place")
    ]
    policies = sorted(
        [
            (
                policy.action,
                policy.group.name if policy.group else None,
                policy.eperson.email if policy.eperson else None,
                policy.start_date,
                policy.end_date,
                policy.name,
                policy.description,
            )
            for policy in item.policies.select_related("group", "eperson")
        ],
        key=repr,
    )
    return {"bundles": bundles, "metadata": metadata, "policies": policies}


def item_change(item: Item, other_collection: Collection) -> list[str]:
    """Give an item an extra bundle and file, other metadata and policies, and another owner.

    Returns the stored names of the item's files after the change.
    """
    storage = bitstream_storage()
    unknown = BitstreamFormat.objects.get(short_description="Unknown")
    extra_bundle = Bundle.objects.create(item=item, name="EXTRA", position=3)
    for bundle, name in ((extra_bundle, "notes.bin"), (item.bundles.get(name="ORIGINAL"), "appendix.bin")):
        bitstream = Bitstream(bundle=bundle, name=name, position=9, format=unknown, size_bytes=5)
        bitstream.file.name = storage.save(f"extra/{bitstream.uuid}", ContentFile(b"extra"))
        bitstream.save()
    title = item.metadata.get(field__element="title", field__qualifier__isnull=True)
    title.value = "Changed title"
    title.save()
    subject = MetadataField.objects.get(schema__short_id="dc", element="subject", qualifier=None)
    MetadataValue.objects.create(item=item, field=subject, value="added", place=99)
    item.policies.all().delete()
    reviewers = Group.objects.get(name="Reviewers")
    ResourcePolicy.objects.create(item=item, action=ResourcePolicy.Action.WRITE, group=reviewers)
    item.owning_collection = other_collection
    item.save()
    return item_files(item)


@dataclass
class ReplaceRun:
    handle: str
    uuid: str
    owner: str
    expected: dict[str, object]
    old_files: list[str]
    callbacks: list


@pytest.fixture
def replace_run(item_package, django_capture_on_commit_callbacks) -> ReplaceRun:
    """Change an item after its export, then replace it from the package with -r -f.

    The commit callbacks are captured and not run, so tests see the state just before the commit.
    """
    item = Item.objects.get(handle__handle=item_package.handle)
    expected = item_content(item)
    other = Collection.objects.exclude(pk=item.owning_collection_id).order_by("name").first()
    old_files = item_change(item, other)

    with django_capture_on_commit_callbacks() as callbacks:
        packager("-r", "-f", "-u", str(item_package.path))

    return ReplaceRun(
        handle=item_package.handle,
        uuid=item_package.uuid,
        owner=other.handle_string,
        expected=expected,
        old_files=old_files,
        callbacks=callbacks,
    )


def replaced_item(run: ReplaceRun) -> Item:
    return Item.objects.get(handle__handle=run.handle)


def test_replace_bundles_match_package(replace_run):
    assert item_content(replaced_item(replace_run))["bundles"] == replace_run.expected["bundles"]


def test_replace_metadata_match_package(replace_run):
    assert item_content(replaced_item(replace_run))["metadata"] == replace_run.expected["metadata"]


def test_replace_policies_match_package(replace_run):
    assert item_content(replaced_item(replace_run))["policies"] == replace_run.expected["policies"]


def test_replace_removes_extra_bundle(replace_run):
    assert not Bundle.objects.filter(name="EXTRA").exists()
    assert not Bitstream.objects.filter(name__in=["notes.bin", "appendix.bin"]).exists()


def test_replace_keeps_identity(replace_run):
    assert str(replaced_item(replace_run).uuid) == replace_run.uuid
    assert Item.objects.filter(handle__handle=replace_run.handle).count() == 1


def test_replace_never_moves(replace_run):
    assert replaced_item(replace_run).owning_collection.handle_string == replace_run.owner


def test_replace_old_files_kept_until_commit(replace_run, bitstream_storage):
    stored = stored_files(bitstream_storage)

    for name in replace_run.old_files:
        assert name in stored, f"{name} was deleted before the commit"


def test_replace_old_files_deleted_after_commit(replace_run, bitstream_storage):
    for callback in replace_run.callbacks:
        callback()

    stored = stored_files(bitstream_storage)
    for name in replace_run.old_files:
        assert name not in stored, f"{name} is still stored after the commit"


def test_replace_new_files_stored_after_commit(replace_run, bitstream_storage):
    for callback in replace_run.callbacks:
        callback()

    stored = stored_files(bitstream_storage)
    for name in item_files(replaced_item(replace_run)):
        assert name in stored, f"{name} of the replaced item is not stored"


def test_replace_failure_keeps_item(item_package, bitstream_storage):
    item = Item.objects.get(handle__handle=item_package.handle)
    expected = item_content(item)
    files = item_files(item)
    pdf = first_pdf_entry(item_package.path)
    package_rewrite(item_package.path, entries={pdf: flip_last_byte(entry_bytes(item_package.path, pdf))})
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match="MD5"):
        packager("-r", "-f", "-u", str(item_package.path))

    assert item_content(Item.objects.get(handle__handle=item_package.handle)) == expected
    assert item_files(item) == files
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_replace_without_confirmation_fails(item_package, bitstream_storage):
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape("Add -u (or --yes) to confirm when not running on a terminal")):
        packager("-r", "-f", str(item_package.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_replace_wrong_type_fails(item_package, bitstream_storage):
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", "-f", "-u", "-i", item_package.collection, str(item_package.path))

    message = str(error.value)
    assert item_package.path.name in message
    assert f"{item_package.collection} has type COLLECTION" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


@pytest.fixture
def overwriting_storage(bitstream_storage):
    """Make the bitstream storage overwrite a file saved under an existing name.

    The S3 backend of django-storages 1.14 does this by default (AWS_S3_FILE_OVERWRITE
    defaults to true), and FileSystemStorage does it with allow_overwrite=True (Django 5.1+).
    """
    storage = storages["bitstreams"]
    previous = storage._allow_overwrite
    storage._allow_overwrite = True
    yield bitstream_storage
    storage._allow_overwrite = previous


def test_replace_overwriting_storage_keeps_files(item_package, overwriting_storage, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        packager("-r", "-f", "-u", str(item_package.path))

    item = Item.objects.get(handle__handle=item_package.handle)
    for bitstream in Bitstream.objects.filter(bundle__item=item):
        assert bitstream_storage().exists(bitstream.file.name), f"{bitstream.name} has no stored file"


def test_replace_failure_overwriting_storage_keeps_files(item_package, overwriting_storage):
    item = Item.objects.get(handle__handle=item_package.handle)
    bitstreams = Bitstream.objects.filter(bundle__item=item)
    originals = {bitstream.file.name: bitstream.file.read() for bitstream in bitstreams}
    # Break the last file of the package, so the files before it are stored and then cleaned up.
    broken = next(name for name in reversed(entry_names(item_package.path)) if name.startswith("bitstream_"))
    assert broken != first_pdf_entry(item_package.path)
    package_rewrite(item_package.path, entries={broken: flip_last_byte(entry_bytes(item_package.path, broken))})

    with pytest.raises(CommandError, match="MD5"):
        packager("-r", "-f", "-u", str(item_package.path))

    for name, content in originals.items():
        assert bitstream_storage().exists(name), f"{name} was deleted by the failed replace"
        assert bitstream_storage().open(name).read() == content, f"{name} was overwritten by the failed replace"


# --- files that do not match the manifest -------------------------------------------------


def test_checksum_mismatch_md5(lost_item, bitstream_storage):
    pdf = first_pdf_entry(lost_item.path)
    package_rewrite(lost_item.path, entries={pdf: flip_last_byte(entry_bytes(lost_item.path, pdf))})
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", str(lost_item.path))

    message = str(error.value)
    assert f"file {pdf} has MD5" in message
    assert "but the manifest states" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_checksum_mismatch_size(lost_item, bitstream_storage):
    pdf = first_pdf_entry(lost_item.path)
    original = entry_bytes(lost_item.path, pdf)
    package_rewrite(lost_item.path, entries={pdf: original + b"appended"})
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", str(lost_item.path))

    message = str(error.value)
    assert f"file {pdf} has {len(original) + 8} bytes, but the manifest states {len(original)}" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_manifest_file_missing_from_zip(lost_item, bitstream_storage):
    pdf = first_pdf_entry(lost_item.path)
    package_rewrite(lost_item.path, drop=(pdf,))
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"names the file '{pdf}' in its manifest, but the zip has no")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def entry_crc_corrupt(path: Path, name: str) -> None:
    """Change the CRC-32 the zip records for ``name``, leaving the entry's data as it was."""
    with zipfile.ZipFile(path) as archive:
        crc = archive.getinfo(name).CRC
    data = path.read_bytes()
    packed = struct.pack("<I", crc)
    assert data.count(packed) == 2, "the CRC must occur once in the local header and once in the central directory"
    path.write_bytes(data.replace(packed, struct.pack("<I", crc ^ 0xFFFFFFFF)))


def test_entry_crc_mismatch_message(lost_item):
    pdf = first_pdf_entry(lost_item.path)
    entry_crc_corrupt(lost_item.path, pdf)

    with pytest.raises(CommandError, match=re.escape(pdf)):
        packager("-r", str(lost_item.path))


def test_entry_crc_mismatch_leaves_no_file(lost_item, bitstream_storage):
    pdf = first_pdf_entry(lost_item.path)
    entry_crc_corrupt(lost_item.path, pdf)
    state = before(bitstream_storage)

    with pytest.raises((CommandError, zipfile.BadZipFile)):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- packages that are not DSpace AIPs ----------------------------------------------------


def test_package_missing(demo, tmp_path, bitstream_storage):
    path = tmp_path / "ITEM@123456789-404.zip"
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"Package {path} does not exist")):
        packager("-r", str(path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_package_not_a_zip(lost_item, bitstream_storage):
    lost_item.path.write_bytes(b"<html>not a package</html>\n")
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"Package {lost_item.path} is not a readable zip file")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_package_truncated(lost_item, bitstream_storage):
    data = lost_item.path.read_bytes()
    lost_item.path.write_bytes(data[: len(data) // 2])
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"Package {lost_item.path} is not a readable zip file")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_package_without_mets(lost_item, bitstream_storage):
    package_rewrite(lost_item.path, drop=("mets.xml",))
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"Package {lost_item.path} has no mets.xml")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_package_mets_not_xml(lost_item, bitstream_storage):
    package_rewrite(lost_item.path, mets=lambda text: text[: len(text) // 2])
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(lost_item.path.name)):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_package_wrong_profile(lost_item, bitstream_storage):
    wrong = "http://www.dspace.org/schema/aip/1.0/mets.xsd"
    profile = 'PROFILE="http://www.dspace.org/schema/aip/mets_aip_1_0.xsd"'
    package_rewrite(lost_item.path, mets=lambda text: replace_once(text, profile, f'PROFILE="{wrong}"'))
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", str(lost_item.path))

    message = str(error.value)
    assert lost_item.path.name in message
    assert f"mets PROFILE is '{wrong}'" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_package_unknown_type(lost_item, bitstream_storage):
    package_rewrite(lost_item.path, mets=lambda text: replace_once(text, 'TYPE="DSpace ITEM"', 'TYPE="DSpace THESIS"'))
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", str(lost_item.path))

    message = str(error.value)
    assert lost_item.path.name in message
    assert "mets TYPE is 'DSpace THESIS'" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- parents ----------------------------------------------------------------------------------


@pytest.fixture
def orphan_item(lost_item, bitstream_storage) -> ItemPackage:
    """An item package in a wiped repository, where the item's collection does not exist."""
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)
    return lost_item


def test_missing_parent_fails(orphan_item, bitstream_storage):
    state = before(bitstream_storage)

    with pytest.raises(CommandError) as error:
        packager("-r", str(orphan_item.path))

    message = str(error.value)
    assert f"Could not find a parent DSpaceObject referenced as '{orphan_item.collection}'" in message
    assert "skipIfParentMissing=true" in message
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_missing_parent_skipped_with_option(orphan_item, bitstream_storage, capsys):
    state = before(bitstream_storage)

    packager("-r", "-o", "skipIfParentMissing=true", str(orphan_item.path))

    output = capsys.readouterr()
    assert f"WARNING: Could not find a parent DSpaceObject referenced as '{orphan_item.collection}'" in output.err
    assert "0 created, 0 replaced, 1 skipped, 1 warning(s)" in output.out
    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_child_package_missing(wiped_site_folder, bitstream_storage):
    name = next(name for name in walk_order(wiped_site_folder, SITE_PACKAGE) if name.startswith("ITEM@"))
    (wiped_site_folder / name).unlink()
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"Child package {name} is missing from {wiped_site_folder}")):
        site_restore(wiped_site_folder)

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- groups and people named by policies --------------------------------------------------


def test_policy_group_missing_fails(lost_item, bitstream_storage):
    assert 'USERTYPE="GROUP">Library staff<' in entry_bytes(lost_item.path, "mets.xml").decode()
    Group.objects.get(name="Library staff").delete()
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape("a policy names the group 'Library staff', which is not in")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_policy_person_missing_fails(lost_item, bitstream_storage):
    found = re.search(r'USERTYPE="INDIVIDUAL">([^<]+)<', entry_bytes(lost_item.path, "mets.xml").decode())
    assert found, "the package must carry a policy for a person"
    email = found.group(1)
    EPerson.objects.get(email=email).delete()
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"a policy names the EPerson {email}, who is not in")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- options and flags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["-r", "-o", "colour=blue"], "Unknown ingest option 'colour'"),
        (["-r", "-o", "ignoreHandle=maybe"], "Option ignoreHandle must be true or false, not 'maybe'"),
        (["-r", "-o", "ignoreHandle"], "Option 'ignoreHandle' is not of the form name=value"),
        (["-r", "-o", "=true"], "Option '=true' is not of the form name=value"),
        (["-r", "-o", "ignoreHandle=true", "-o", "ignoreHandle=false"], "Option 'ignoreHandle' is given twice"),
        (["-r", "-k", "-f"], "-k (keep existing) and -f (force replace) cannot be combined"),
        (["-k"], "-k and -f only apply to restore mode; add -r"),
        (["-f"], "-k and -f only apply to restore mode; add -r"),
        (["-s", "-r"], "-s (submit) and -r (restore) cannot be combined"),
    ],
    ids=[
        "unknown-name",
        "bad-boolean",
        "no-equals",
        "no-name",
        "repeated",
        "keep-with-replace",
        "keep-without-restore",
        "replace-without-restore",
        "submit-with-restore",
    ],
)
def test_invalid_flags(lost_item, bitstream_storage, arguments, expected):
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(expected)):
        packager(*arguments, str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


# --- metadata registry --------------------------------------------------------------------


def test_unknown_schema_fails(lost_item, bitstream_storage):
    custom = 'mdschema="mycustomschema"'
    package_rewrite(lost_item.path, mets=lambda text: replace_once(text, 'mdschema="local"', custom))
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape("Unknown Metadata Schema encountered (mycustomschema)")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def shelfmark_field(text: str) -> str:
    return replace_once(text, 'mdschema="local" element="note"', 'mdschema="local" element="shelfmark"')


def test_unknown_field_without_creation_fails(lost_item, bitstream_storage):
    package_rewrite(lost_item.path, mets=shelfmark_field)
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape("Metadata field local.shelfmark")):
        packager("-r", "-o", "createMetadataFields=false", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_unknown_field_created_by_default(lost_item):
    package_rewrite(lost_item.path, mets=shelfmark_field)

    packager("-r", str(lost_item.path))

    item = Item.objects.get(handle__handle=lost_item.handle)
    values = item.metadata.filter(field__schema__short_id="local", field__element="shelfmark")
    assert list(values.values_list("value", flat=True)) == ["internal note"]


# --- submit (-s) ----------------------------------------------------------------------------


@dataclass
class SubmitRun:
    package: ItemPackage
    parent: str
    item: Item


@pytest.fixture
def submit_run(item_package) -> SubmitRun:
    """Submit an exported item package as a new item of another collection."""
    parent = Collection.objects.exclude(handle__handle=item_package.collection).select_related("handle").first()
    existing = set(Item.objects.values_list("pk", flat=True))

    packager("-s", "-p", parent.handle_string, str(item_package.path))

    item = Item.objects.exclude(pk__in=existing).get(handle__isnull=False)
    return SubmitRun(package=item_package, parent=parent.handle_string, item=item)


def test_submit_new_handle(submit_run):
    assert submit_run.item.handle_string != submit_run.package.handle


def test_submit_new_uuid(submit_run):
    assert str(submit_run.item.uuid) != submit_run.package.uuid


def test_submit_parent_from_option(submit_run):
    assert submit_run.item.owning_collection.handle_string == submit_run.parent


def test_submit_keeps_original(submit_run):
    original = Item.objects.get(handle__handle=submit_run.package.handle)

    assert str(original.uuid) == submit_run.package.uuid
    assert original.owning_collection.handle_string == submit_run.package.collection


def test_submit_item_under_community_fails(item_package, bitstream_storage):
    state = before(bitstream_storage)

    expected = f"cannot be placed under COMMUNITY {item_package.community}. Give the handle of a COLLECTION with -p"
    with pytest.raises(CommandError, match=re.escape(expected)):
        packager("-s", "-p", item_package.community, str(item_package.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_submit_missing_parent_fails(item_package, bitstream_storage):
    state = before(bitstream_storage)

    expected = "Could not find a parent DSpaceObject referenced as '123456789/999'"
    with pytest.raises(CommandError, match=re.escape(expected)):
        packager("-s", "-p", "123456789/999", str(item_package.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


@dataclass
class CollectionCopy:
    original: Collection
    copy: Collection
    submitters: list[str]


@pytest.fixture
def collection_copy(site_folder) -> CollectionCopy:
    """Submit the package of a collection with role groups into the repository that still contains it."""
    original = Collection.objects.exclude(admin_group=None).select_related("handle", "community__handle").first()
    submitters = sorted(original.submitters_group.members.values_list("email", flat=True))
    existing = set(Collection.objects.values_list("pk", flat=True))

    path = site_folder / package_name("COLLECTION", original.handle_string)

    packager("-s", "-p", original.community.handle_string, str(path))

    original.refresh_from_db()
    copy = Collection.objects.exclude(pk__in=existing).get()
    return CollectionCopy(original=original, copy=copy, submitters=submitters)


def test_submit_collection_copy_keeps_original_groups(collection_copy):
    original = collection_copy.original

    assert sorted(original.submitters_group.members.values_list("email", flat=True)) == collection_copy.submitters
    assert Collection.objects.filter(admin_group=original.admin_group).count() == 1


def test_submit_collection_copy_own_groups(collection_copy):
    copy = collection_copy.copy

    assert copy.admin_group_id not in (None, collection_copy.original.admin_group_id)
    assert copy.submitters_group_id not in (None, collection_copy.original.submitters_group_id)
    assert sorted(copy.submitters_group.members.values_list("email", flat=True)) == collection_copy.submitters


# --- packages that reach outside themselves -----------------------------------------------


def first_child_href_replace(text: str, href: str) -> str:
    """Point the first child package reference (a URL mptr) of a manifest at ``href``."""
    pattern = r'(LOCTYPE="URL" xlink:type="simple" xlink:href=")[^"]+(")'
    rewritten, count = re.subn(pattern, lambda match: match.group(1) + href + match.group(2), text, count=1)
    assert count == 1, "the manifest lists no child package"
    return rewritten


@pytest.mark.parametrize("href", ["../x.zip", "/tmp/x.zip", "sub/x.zip"], ids=["parent", "absolute", "subfolder"])
def test_child_reference_outside_folder(wiped_site_folder, bitstream_storage, href):
    collection = next(name for name in walk_order(wiped_site_folder, SITE_PACKAGE) if name.startswith("COLLECTION@"))
    package_rewrite(wiped_site_folder / collection, mets=lambda text: first_child_href_replace(text, href))
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape(f"references a child outside its folder: {href!r}")):
        site_restore(wiped_site_folder)

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_zip_entry_outside_package(lost_item, bitstream_storage):
    package_rewrite(lost_item.path, extra={"../evil.txt": b"outside"})
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape("has an entry outside the package: '../evil.txt'")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files


def test_zip_duplicate_entry(lost_item, bitstream_storage):
    with pytest.warns(UserWarning, match="Duplicate name"):
        package_rewrite(lost_item.path, extra={"mets.xml": entry_bytes(lost_item.path, "mets.xml")})
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match=re.escape("has two entries named 'mets.xml'")):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database
    assert stored_files(bitstream_storage) == state.files
