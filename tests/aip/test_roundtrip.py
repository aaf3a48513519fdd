"""Round trips through the packager: export, empty the repository, restore, compare.

The restore tests run on a generated repository: they export the whole site,
delete every object, person and group (``repository_wipe``) and every stored
file, restore the export and then compare the result with what was there before.
The other tests restore parts of an export in separate runs, to check mapped
items, handle minting and plain (non-recursive) restores.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aip.services.handles import handle_mint
from repository.demo import demo_repository_build
from repository.models import Bitstream, Collection, Community, EPerson, Group, Handle, Item, ResourcePolicy
from tests.aip.conftest import PERSON_FIELDS, export_site, package_bytes, packager, repository_wipe, stored_files

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"


# --- helpers ------------------------------------------------------------------------------


def package_name(object_type: str, handle: str) -> str:
    return f"{object_type}@{handle.replace('/', '-')}.zip"


def bitstream_folder_clear(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def site_restore(folder: Path) -> None:
    """Restore the whole site from ``folder`` as a fresh installation is restored: -r -a -f."""
    packager("-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE))


def site_roles_restore(folder: Path) -> None:
    """Restore only the SITE package (people and groups), without its descendants."""
    packager("-r", "-f", "-u", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE))


def wipe_and_restore(folder: Path, bitstream_root: Path) -> None:
    repository_wipe()
    bitstream_folder_clear(bitstream_root)
    site_restore(folder)


def assert_same_exports(first: Path, second: Path) -> None:
    expected = package_bytes(first)
    actual = package_bytes(second)
    assert sorted(actual) == sorted(expected), "the two exports hold different package names"
    for name, content in expected.items():
        assert actual[name] == content, f"{name} differs between the export before and after the restore"


def handle_number(handle: str) -> int:
    return int(handle.rsplit("/", 1)[1])


def archived_items():
    """Return the items that have a handle, in handle order; collection template items have none."""
    return Item.objects.filter(handle__isnull=False).select_related("handle").order_by("handle__suffix_number")


def item_uuids() -> dict[str, str]:
    return {item.handle_string: str(item.uuid) for item in archived_items()}


def item_submitters() -> dict[str, str | None]:
    return {item.handle_string: item.submitter.email if item.submitter else None for item in archived_items()}


def item_collections() -> dict[str, tuple[str, list[str]]]:
    """Return each item's owning collection and the collections it is mapped into, by handle."""
    return {
        item.handle_string: (
            item.owning_collection.handle_string,
            sorted(collection.handle_string for collection in item.mapped_collections.all()),
        )
        for item in archived_items()
    }


def item_states() -> dict[str, tuple[bool, bool]]:
    return {item.handle_string: (item.withdrawn, item.in_archive) for item in archived_items()}


def bundle_orders() -> dict[str, list[str]]:
    return {
        item.handle_string: list(item.bundles.order_by("position").values_list("name", flat=True))
        for item in archived_items()
    }


def bitstream_orders() -> dict[tuple[str, str], list[tuple[str, str, str]]]:
    """Return (uuid, name, checksum) of each bundle's bitstreams in order, by (item handle, bundle name)."""
    orders = {}
    for item in archived_items():
        for bundle in item.bundles.all():
            orders[(item.handle_string, bundle.name)] = [
                (str(bitstream.uuid), bitstream.name, bitstream.checksum)
                for bitstream in bundle.bitstreams.order_by("position")
            ]
    return orders


def primary_bitstreams() -> dict[tuple[str, str], str | None]:
    return {
        (item.handle_string, bundle.name): str(bundle.primary_bitstream.uuid) if bundle.primary_bitstream else None
        for item in archived_items()
        for bundle in item.bundles.all()
    }


def policy_target(policy: ResourcePolicy) -> tuple:
    """Return a key for the object of a policy that a restore keeps: its UUID, or item handle and name for a bundle."""
    if policy.bundle_id:
        return ("BUNDLE", policy.bundle.item.handle_string, policy.bundle.name)
    if policy.site_id:
        return ("SITE",)
    for relation in ("community", "collection", "item", "bitstream"):
        obj = getattr(policy, relation)
        if obj is not None:
            return (relation.upper(), str(obj.uuid))
    raise AssertionError(f"policy {policy.pk} has no object")


def policies() -> list[tuple]:
    rows = []
    for policy in ResourcePolicy.objects.select_related("group", "eperson", "bundle__item__handle"):
        rows.append(
            (
                policy_target(policy),
                policy.action,
                policy.group.name if policy.group else None,
                policy.eperson.email if policy.eperson else None,
                policy.start_date,
                policy.end_date,
                policy.name,
                policy.description,
            )
        )
    return sorted(rows, key=repr)


def groups() -> dict[str, tuple[str, list[str], list[str]]]:
    return {
        group.name: (
            str(group.uuid),
            sorted(person.email for person in group.members.all()),
            sorted(member.name for member in group.member_groups.all()),
        )
        for group in Group.objects.all()
    }


def collection_roles() -> dict[str, dict[str, str | None]]:
    fields = ["admin_group", "submitters_group", "workflow_step_1", "workflow_step_2", "workflow_step_3"]
    return {
        collection.handle_string: {field: getattr(getattr(collection, field), "name", None) for field in fields}
        for collection in Collection.objects.all()
    }



def people() -> list[dict]:
    return list(EPerson.objects.order_by("email").values(*PERSON_FIELDS))


STATE_READERS = {
    "item_uuids": item_uuids,
    "item_submitters": item_submitters,
    "item_collections": item_collections,
    "item_states": item_states,
    "bundle_orders": bundle_orders,
    "bitstream_orders": bitstream_orders,
    "primary_bitstreams": primary_bitstreams,
    "policies": policies,
    "groups": groups,
    "collection_roles": collection_roles,
    "people": people,
}


def mapped_item() -> Item:
    """Return the one generated item that is mapped into a collection besides its owner."""
    return Item.objects.filter(mapped_collections__isnull=False).select_related("owning_collection__handle").get()


def top_community(collection: Collection) -> Community:
    community = collection.community
    while community.parent_id:
        community = community.parent
    return community


def ancestors(item: Item) -> list[tuple[str, str]]:
    """Return (type, handle) of the item's collection and communities, top community first."""
    chain = [("COLLECTION", item.owning_collection.handle_string)]
    community = item.owning_collection.community
    while community is not None:
        chain.append(("COMMUNITY", community.handle_string))
        community = community.parent
    return list(reversed(chain))


# --- whole-site round trip ----------------------------------------------------------------


def roundtrip_exports(tmp_path: Path, bitstream_root: Path) -> tuple[Path, Path]:
    """Export the site, wipe, restore and export again, and return both export folders."""
    first = tmp_path / "before"
    export_site(first)
    wipe_and_restore(first, bitstream_root)
    second = tmp_path / "after"
    export_site(second)
    return first, second


def test_site_roundtrip_identical(demo, tmp_path, bitstream_storage):
    first, second = roundtrip_exports(tmp_path, bitstream_storage)

    assert_same_exports(first, second)


@pytest.mark.parametrize(
    "seed, items_per_collection", [(3, 12), (29, 5)], ids=["seed3-12-items", "seed29-5-items"]
)
def test_site_roundtrip_identical_other_shapes(admin, tmp_path, bitstream_storage, seed, items_per_collection):
    demo_repository_build(seed=seed, items_per_collection=items_per_collection)

    first, second = roundtrip_exports(tmp_path, bitstream_storage)

    assert_same_exports(first, second)


@pytest.fixture
def restored(demo, tmp_path, bitstream_storage) -> dict[str, object]:
    """Capture the generated repository, then export, wipe and restore it, and return the capture."""
    before = {name: reader() for name, reader in STATE_READERS.items()}
    folder = tmp_path / "export"
    export_site(folder)
    wipe_and_restore(folder, bitstream_storage)
    return before


def test_restore_keeps_state(restored):
    for aspect, reader in STATE_READERS.items():
        assert reader() == restored[aspect], f"{aspect} differ after the restore"


def test_restore_keeps_withdrawn_item(restored):
    handle = next(handle for handle, (withdrawn, _) in restored["item_states"].items() if withdrawn)

    item = Item.objects.get(handle__handle=handle)

    assert item.withdrawn is True
    assert item.in_archive is False


def test_restore_mapped_item_once(restored):
    item = mapped_item()

    assert Item.objects.filter(handle__handle=item.handle_string).count() == 1
    assert item.owning_collection.handle_string == restored["item_collections"][item.handle_string][0]
    assert item.owning_collection not in item.mapped_collections.all()


def test_restore_stores_every_file(restored, bitstream_storage):
    names = stored_files(bitstream_storage)

    assert len(names) == Bitstream.objects.count()
    assert sorted(bitstream.file.name for bitstream in Bitstream.objects.all()) == names


# --- handles after a restore --------------------------------------------------------------


def test_handle_mint_after_restore(restored):
    # After the wipe, every handle under the prefix apart from the site's came back with the restore.
    restored_numbers = list(Handle.objects.filter(prefix="123456789").values_list("suffix_number", flat=True))

    minted = handle_mint("ITEM")

    assert minted.suffix_number > max(restored_numbers)
    assert minted.handle == f"123456789/{minted.suffix_number}"


def test_submit_after_restore_new_handle(demo, tmp_path, bitstream_storage):
    folder = tmp_path / "export"
    export_site(folder)
    restored_handles = list(Handle.objects.values_list("handle", flat=True))
    wipe_and_restore(folder, bitstream_storage)
    item = archived_items().first()
    package = folder / package_name("ITEM", item.handle_string)

    packager("-s", "-p", item.owning_collection.handle_string, str(package))

    submitted = Item.objects.exclude(handle__handle__in=restored_handles).get(handle__isnull=False)
    assert handle_number(submitted.handle_string) > max(handle_number(handle) for handle in restored_handles)


# --- mapped item restored in separate runs ------------------------------------------------


@pytest.fixture
def mapping_export(demo, tmp_path, bitstream_storage) -> dict[str, object]:
    """Export the site, wipe, and restore only people and groups, and return the mapped item's handles."""
    item = mapped_item()
    owner = item.owning_collection
    other = item.mapped_collections.get()
    facts = {
        "item": item.handle_string,
        "owner": owner.handle_string,
        "other": other.handle_string,
        "owner_top": top_community(owner).handle_string,
        "other_top": top_community(other).handle_string,
    }
    assert facts["owner_top"] != facts["other_top"], "the generated mapping must cross top communities"
    folder = tmp_path / "export"
    export_site(folder)
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)
    site_roles_restore(folder)
    facts["folder"] = folder
    return facts


def assert_mapped_once(facts: dict[str, object]) -> None:
    items = Item.objects.filter(handle__handle=facts["item"])
    assert items.count() == 1
    item = items.get()
    assert item.owning_collection.handle_string == facts["owner"]
    assert [collection.handle_string for collection in item.mapped_collections.all()] == [facts["other"]]


def test_mapping_restored_mapping_collection_first(mapping_export):
    folder = mapping_export["folder"]
    # The mapping collection lists the item before its owner exists, so the item is skipped with a warning.
    packager(
        "-r", "-a", "-o", "skipIfParentMissing=true",
        str(folder / package_name("COMMUNITY", mapping_export["other_top"])),
    )
    packager("-r", "-a", str(folder / package_name("COMMUNITY", mapping_export["owner_top"])))

    assert_mapped_once(mapping_export)


def test_mapping_restored_owner_first(mapping_export):
    folder = mapping_export["folder"]
    packager("-r", "-a", str(folder / package_name("COMMUNITY", mapping_export["owner_top"])))
    # The item exists by now, so the run that lists it again keeps it (-k) and maps it.
    packager("-r", "-a", "-k", str(folder / package_name("COMMUNITY", mapping_export["other_top"])))

    assert_mapped_once(mapping_export)


def test_mapping_skipped_item_warns(mapping_export, capsys):
    folder = mapping_export["folder"]

    packager(
        "-r", "-a", "-o", "skipIfParentMissing=true",
        str(folder / package_name("COMMUNITY", mapping_export["other_top"])),
    )

    errors = capsys.readouterr().err
    assert f"Could not find a parent DSpaceObject referenced as '{mapping_export['owner']}'" in errors
    assert not Item.objects.filter(handle__handle=mapping_export["item"]).exists()


def test_mapping_single_run_mapping_collection_first(demo, tmp_path, bitstream_storage):
    first_top, second_top = Community.objects.filter(parent__isnull=True).order_by("name")[:2]
    collections = list(Collection.objects.order_by("name"))
    mapping = next(collection for collection in collections if top_community(collection) == first_top)
    owner = next(collection for collection in collections if top_community(collection) == second_top)
    item = owner.owned_items.filter(withdrawn=False, mapped_collections__isnull=True).first()
    # The site walk reaches the mapping collection, under the first top community, before the owner.
    item.mapped_collections.add(mapping)
    facts = {"item": item.handle_string, "owner": owner.handle_string, "other": mapping.handle_string}
    folder = tmp_path / "export"
    export_site(folder)
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)

    packager(
        "-r", "-a", "-f", "-u", "-o", "skipIfParentMissing=true", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE)
    )

    assert_mapped_once(facts)


# --- restore of one item package ----------------------------------------------------------


@pytest.fixture
def single_item_restore(demo, tmp_path, bitstream_storage) -> dict[str, object]:
    """Restore the containers of an unmapped item one package at a time, then the item with plain -r."""
    item = archived_items().filter(mapped_collections__isnull=True, withdrawn=False).first()
    facts = {"handle": item.handle_string, "uuid": str(item.uuid), "owner": item.owning_collection.handle_string}
    chain = ancestors(item)
    folder = tmp_path / "export"
    export_site(folder)
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)
    site_roles_restore(folder)
    for object_type, handle in chain:
        packager("-r", str(folder / package_name(object_type, handle)))
    facts["package"] = folder / package_name("ITEM", item.handle_string)
    packager("-r", str(facts["package"]))
    return facts


def test_restore_single_item_identity(single_item_restore):
    item = Item.objects.get(handle__handle=single_item_restore["handle"])

    assert str(item.uuid) == single_item_restore["uuid"]
    assert item.owning_collection.handle_string == single_item_restore["owner"]


def test_restore_single_item_only(single_item_restore):
    assert Item.objects.filter(handle__isnull=False).count() == 1


def test_restore_single_item_reexport_identical(single_item_restore, tmp_path):
    again = tmp_path / "again" / single_item_restore["package"].name

    packager("-d", "-i", single_item_restore["handle"], str(again))

    assert again.read_bytes() == single_item_restore["package"].read_bytes()



# --- replace in place -----------------------------------------------------------------------


@pytest.fixture
def replaced_in_place(demo, tmp_path, django_capture_on_commit_callbacks) -> tuple[Path, Path]:
    """Export the site, restore it with -r -a -f over the unchanged repository, export again.

    The restore's commit callbacks (deleting the replaced files) run, as after a real commit.
    """
    first = tmp_path / "before"
    export_site(first)
    with django_capture_on_commit_callbacks(execute=True):
        site_restore(first)
    second = tmp_path / "after"
    export_site(second)
    return first, second


def test_site_replace_in_place_identical(replaced_in_place):
    assert_same_exports(*replaced_in_place)


def test_site_replace_in_place_keeps_files(replaced_in_place, bitstream_storage):
    stored = stored_files(bitstream_storage)

    for bitstream in Bitstream.objects.all():
        assert bitstream.file.name in stored, f"{bitstream.name} ({bitstream.uuid}) has no stored file"
