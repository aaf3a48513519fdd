"""Restoring items in batches: new items wait and are inserted together.

The round trips run with batches of two items. Then every point where a batch is
inserted happens within the small demo repository: a full batch, a container or an
existing item next, the end of the run, and an item listed again by a second collection.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from aip.errors import AipError, ObjectExistsError
from aip.options import ExportOptions, IngestOptions
from aip.services import item_batch
from aip.services.export import object_export
from aip.services.ingest import item_packages_ingest, package_ingest
from repository.models import Bundle, Collection, Group, Handle, Item, MetadataValue
from tests.aip.conftest import (
    ADMIN_EMAIL,
    before,
    database_snapshot,
    export_site,
    package_bytes,
    repository_wipe,
    stored_files,
)
from tests.aip.hostile import manifest_edit, sub_once
from tests.aip.test_query_counts import collection, item_build  # noqa: F401 (fixture)
from tests.aip.test_roundtrip import assert_same_exports, bitstream_folder_clear, site_restore

RESTORE = IngestOptions(restore=True, recursive=True)
# Over an existing collection: the collection is replaced, and its deleted items are new again.
REPLACE = IngestOptions(restore=True, replace=True, recursive=True)


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(item_batch, "BATCH_ITEMS", 2)


def collection_export(collection: Collection, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "COLLECTION.zip"
    object_export(obj=collection, path=path, options=ExportOptions(recursive=True))
    return path


def items_of(collection: Collection) -> list[Item]:
    return list(collection.owned_items.select_related("handle").order_by("handle__suffix_number"))


def collection_delete(collection: Collection) -> None:
    """Delete ``collection``, its items and its groups, so that a plain restore brings them back."""
    items_delete(items_of(collection))
    groups = Group.objects.filter(name__startswith=f"COLLECTION_{collection.uuid}_")
    collection.delete()
    groups.delete()
    Handle.objects.filter(pk=collection.handle_id).delete()


def items_delete(items: list[Item]) -> None:
    for item in items:
        Bundle.objects.filter(item=item).update(primary_bitstream=None)
        item.mapped_collections.clear()
        item.delete()
        Handle.objects.filter(pk=item.handle_id).delete()


def test_site_restore_in_batches_of_two_round_trips(demo, tmp_path, bitstream_storage, small_batches):
    first = tmp_path / "first"
    first.mkdir()
    export_site(first)
    mapped_before = Item.objects.filter(mapped_collections__isnull=False).count()
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)

    site_restore(first)

    second = tmp_path / "second"
    second.mkdir()
    export_site(second)
    assert_same_exports(first, second)
    assert mapped_before > 0
    assert Item.objects.filter(mapped_collections__isnull=False).count() == mapped_before


def test_new_and_existing_items_in_one_replace(collection, tmp_path, small_batches):
    items = [item_build(collection, files=2, values=3, policies=2) for _ in range(5)]
    first = collection_export(collection, tmp_path / "first")
    items_delete([items[1], items[3]])
    MetadataValue.objects.filter(item=items[0]).update(value="Edited after the export")

    package_ingest(path=first, options=REPLACE, eperson_email=ADMIN_EMAIL)

    second = collection_export(Collection.objects.get(pk=collection.pk), tmp_path / "second")
    assert second.read_bytes() == first.read_bytes()
    assert package_bytes(tmp_path / "second") == package_bytes(tmp_path / "first")
    assert not MetadataValue.objects.filter(value="Edited after the export").exists()


def restore_queries(collection: Collection, folder: Path, size: int, ingest) -> int:
    """Export ``size`` new items of ``collection``, delete them, and count the queries of ``ingest`` that restores them.

    ``ingest`` takes the collection package's path and the items' package paths.
    """
    items = [item_build(collection, files=2, values=4, policies=2) for _ in range(size)]
    path = collection_export(collection, folder)
    packages = [folder / f"ITEM@{item.handle_string.replace('/', '-')}.zip" for item in items]
    items_delete(items)
    with CaptureQueriesContext(connection) as queries:
        ingest(path, packages)
    assert len(items_of(collection)) == size
    items_delete(items_of(collection))
    return len(queries)


def test_restore_queries_grow_by_about_one_per_item(collection, tmp_path):
    def ingest(path, _packages):
        package_ingest(path=path, options=REPLACE, eperson_email=ADMIN_EMAIL)

    counts = {size: restore_queries(collection, tmp_path / str(size), size, ingest) for size in (5, 25)}
    # One check of handle and UUID per item; the inserts are shared by a batch.
    assert counts[25] - counts[5] <= 20 * 1.5, counts


def test_part_queries_grow_by_about_one_per_item(collection, tmp_path):
    """A part job of a split restore ingests item packages alone, with the collections that list them."""
    def ingest(_path, packages):
        listed = [(package, [collection.pk]) for package in packages]
        item_packages_ingest(packages=listed, options=REPLACE, eperson_email=ADMIN_EMAIL)

    counts = {size: restore_queries(collection, tmp_path / str(size), size, ingest) for size in (5, 25)}
    assert counts[25] - counts[5] <= 20 * 1.5, counts


def test_duplicate_handle_fails_the_run(collection, tmp_path, bitstream_storage):
    first, second = item_build(collection), item_build(collection)
    path = collection_export(collection, tmp_path / "export")
    duplicate = tmp_path / "export" / f"ITEM@{second.handle_string.replace('/', '-')}.zip"
    manifest_edit(duplicate, lambda text: text.replace(second.handle_string, first.handle_string))
    collection_delete(collection)
    expected = before(bitstream_storage)

    with pytest.raises(ObjectExistsError, match=first.handle_string):
        package_ingest(path=path, options=RESTORE, eperson_email=ADMIN_EMAIL)

    assert database_snapshot() == expected.database
    assert stored_files(bitstream_storage) == expected.files


def test_rejected_rows_name_the_package(collection, tmp_path, bitstream_storage):
    item = item_build(collection)
    path = collection_export(collection, tmp_path / "export")
    package = tmp_path / "export" / f"ITEM@{item.handle_string.replace('/', '-')}.zip"
    manifest_edit(package, lambda text: sub_once(text, r'USE="ORIGINAL"', 'USE="' + "B" * 300 + '"'))
    collection_delete(collection)
    expected = before(bitstream_storage)

    with pytest.raises(AipError, match=f"rows of package\\(s\\) {package.name} failed"):
        package_ingest(path=path, options=RESTORE, eperson_email=ADMIN_EMAIL)

    assert database_snapshot() == expected.database
    assert stored_files(bitstream_storage) == expected.files
