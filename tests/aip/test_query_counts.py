"""SQL queries of exporting and restoring one item: a fixed bound, whatever the
number of files, metadata values or policies the item has."""
from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile

from aip.options import ExportOptions, IngestOptions
from aip.selectors import site_get
from aip.services.export import package_write
from aip.services.handles import handle_mint
from aip.services.ingest import package_ingest
from aip.services.manifests import items_prefetch, manifest_for
from repository.models import (
    Bitstream,
    BitstreamFormat,
    Bundle,
    Collection,
    Community,
    Group,
    Item,
    MetadataField,
    MetadataSchema,
    MetadataValue,
    ResourcePolicy,
    bitstream_storage,
)
from tests.aip.conftest import ADMIN_EMAIL

# Queries of one item's export: the item, its bundles, bitstreams, their policies, its
# policies, metadata values and their fields, mappings, and the collections that group names embed.
EXPORT_QUERIES = 10
# Queries of restoring one item package into its collection, with the run's own set-up.
# A run took 23 when this bound was set, and the margin is smaller than one query per file or value.
RESTORE_QUERIES = 25
# Queries of reading a batch of items with ``items_prefetch`` and describing each.
BATCH_QUERIES = 10


@pytest.fixture
def collection(admin) -> Collection:
    site_get()
    community = Community.objects.create(handle=handle_mint("COMMUNITY"), name="Community")
    collection = Collection.objects.create(handle=handle_mint("COLLECTION"), community=community, name="Collection")
    collection.submitters_group = Group.objects.create(name=f"COLLECTION_{collection.uuid}_SUBMIT")
    collection.save()
    return collection


def item_build(collection: Collection, *, files: int = 1, values: int = 5, policies: int = 1) -> Item:
    """Create an item with ``files`` files, ``values`` metadata values and ``policies`` policies on the item,
    its bundle and each file, every policy but the first naming a group named after the collection."""
    item = Item.objects.create(
        handle=handle_mint("ITEM"), owning_collection=collection, in_archive=True, name="Item", submitter=None
    )
    title = MetadataField.objects.get_or_create(schema=MetadataSchema.objects.get(short_id="dc"), element="title")[0]
    MetadataValue.objects.bulk_create(
        MetadataValue(field=title, value=f"Title {place}", place=place, item=item) for place in range(values)
    )
    bundle = Bundle.objects.create(item=item, name="ORIGINAL")
    unknown = BitstreamFormat.objects.get(short_description="Unknown")
    for position in range(files):
        data = f"file {position} of {item.uuid}".encode()
        bitstream = Bitstream(
            bundle=bundle, position=position, sequence_id=position + 1, name=f"file-{position}.bin", format=unknown,
            size_bytes=len(data), checksum=hashlib.md5(data).hexdigest(),
        )
        bitstream.file.name = bitstream_storage().save(f"q/{bitstream.uuid}", ContentFile(data))
        bitstream.save()
    groups = [Group.objects.get(name=Group.ANONYMOUS)] + [
        Group.objects.get_or_create(name=f"COLLECTION_{collection.uuid}_ROLE{index}")[0] for index in range(1, policies)
    ]
    for target in [item, bundle, *bundle.bitstreams.all()]:
        ResourcePolicy.objects.bulk_create(
            ResourcePolicy(action=ResourcePolicy.Action.READ, group=group, **{target._meta.model_name: target})
            for group in groups
        )
    return item


def item_delete(item: Item) -> None:
    ResourcePolicy.objects.filter(bitstream__bundle__item=item).delete()
    Bundle.objects.filter(item=item).update(primary_bitstream=None)
    item.delete()


def restore_counted(item: Item, folder, django_assert_max_num_queries) -> Item:
    """Export ``item``, delete it, and restore its package within RESTORE_QUERIES queries."""
    path = folder / "ITEM.zip"
    package_write(obj=item, path=path, options=ExportOptions())
    item_delete(item)
    with django_assert_max_num_queries(RESTORE_QUERIES):
        package_ingest(path=path, options=IngestOptions(restore=True), eperson_email=ADMIN_EMAIL)
    return Item.objects.get(uuid=item.uuid)


@pytest.mark.parametrize("files", [1, 20])
def test_item_export_queries_by_files(collection, tmp_path, django_assert_max_num_queries, files):
    item = item_build(collection, files=files)
    with django_assert_max_num_queries(EXPORT_QUERIES):
        package_write(obj=item, path=tmp_path / "ITEM.zip", options=ExportOptions())


@pytest.mark.parametrize("values", [5, 50])
def test_item_export_queries_by_values(collection, tmp_path, django_assert_max_num_queries, values):
    item = item_build(collection, values=values)
    with django_assert_max_num_queries(EXPORT_QUERIES):
        package_write(obj=item, path=tmp_path / "ITEM.zip", options=ExportOptions())


@pytest.mark.parametrize("policies", [1, 10])
def test_item_export_queries_by_policies(collection, tmp_path, django_assert_max_num_queries, policies):
    item = item_build(collection, files=3, policies=policies)
    with django_assert_max_num_queries(EXPORT_QUERIES):
        package_write(obj=item, path=tmp_path / "ITEM.zip", options=ExportOptions())


@pytest.mark.parametrize("files", [1, 20])
def test_item_restore_queries_by_files(collection, tmp_path, django_assert_max_num_queries, files):
    restored = restore_counted(item_build(collection, files=files), tmp_path, django_assert_max_num_queries)
    assert Bitstream.objects.filter(bundle__item=restored).count() == files


@pytest.mark.parametrize("values", [5, 50])
def test_item_restore_queries_by_values(collection, tmp_path, django_assert_max_num_queries, values):
    restored = restore_counted(item_build(collection, values=values), tmp_path, django_assert_max_num_queries)
    assert restored.metadata.count() == values


@pytest.mark.parametrize("policies", [1, 10])
def test_item_restore_queries_by_policies(collection, tmp_path, django_assert_max_num_queries, policies):
    restored = restore_counted(item_build(collection, files=3, policies=policies), tmp_path, django_assert_max_num_queries)
    assert ResourcePolicy.objects.filter(item=restored).count() == policies
    assert ResourcePolicy.objects.filter(bitstream__bundle__item=restored).count() == 3 * policies


@pytest.mark.parametrize("count", [2, 20])
def test_items_prefetch_queries_by_items(collection, django_assert_max_num_queries, count):
    for _ in range(count):
        item_build(collection, files=2, policies=3)
    items = list(Item.objects.select_related("handle"))
    with django_assert_max_num_queries(BATCH_QUERIES):
        items_prefetch(items)
        contents = [manifest_for(item, ExportOptions()) for item in items]
    assert len(contents) == count
