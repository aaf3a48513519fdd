"""Restore AIPs written by DSpace 1.7, and export them again.

The samples (AIP_SAMPLES_DIR) are of two kinds. One is a production export of a
UBC collection with its nine items, without its parent community 2429/1076. The
other is the four examples of DSpace's AIP documentation: a site, a community,
one of its collections, and an item whose collection is not included. Every test
here skips when AIP_SAMPLES_DIR is unset.
"""
from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from aip.mets.model import PackageManifest
from aip.mets.reader import read_manifest
from repository.models import Bitstream, Collection, Community, EPerson, Group, Handle, Item, Site
from tests.aip.conftest import ADMIN_EMAIL, database_snapshot, packager, stored_files

pytestmark = [pytest.mark.django_db, pytest.mark.samples]

UBC_COLLECTION = "2429/1314"
UBC_PARENT = "2429/1076"
UBC_GROUP_MEMBERS = ["reviewer@example.org", "submitter@example.org"]
# The top package keeps the name its exporter chose, while its children follow DSpace's naming rule.
UBC_TOP_PACKAGE = "aip_1314.zip"


# --- helpers ------------------------------------------------------------------------------


def manifest_of(path: Path) -> PackageManifest:
    with zipfile.ZipFile(path) as archive:
        return read_manifest(archive.read("mets.xml"), source=path.name)


def dim_of(manifest_sections) -> list:
    return next(section.dim for section in manifest_sections if section.md_type == "DIM")


def dim_tuples(values) -> list[tuple]:
    return [(v.schema, v.element, v.qualifier, v.value, v.language) for v in values]


def stored_dim_tuples(obj) -> list[tuple]:
    return [
        (v.field.schema.short_id, v.field.element, v.field.qualifier, v.value, v.language)
        for v in obj.metadata.select_related("field__schema").order_by("place", "id")
    ]


def policy_keys(policies) -> list[tuple]:
    return sorted((p.action, p.context_class, p.group_name or p.eperson_email or "") for p in policies)


def file_md5_and_size(bitstream: Bitstream) -> tuple[str, int]:
    digest = hashlib.md5()
    size = 0
    with bitstream.file.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def handle_row(handle: str, resource_type: str) -> Handle:
    prefix, _, suffix = handle.partition("/")
    return Handle.objects.create(
        handle=handle, prefix=prefix, suffix=suffix, suffix_number=int(suffix), resource_type=resource_type
    )


@pytest.fixture(scope="module")
def ubc_dir(samples_dir) -> Path:
    return samples_dir / "archivematica-sampledata"


@pytest.fixture(scope="module")
def docs_dir(samples_dir) -> Path:
    return samples_dir / "dspace-docs-1.7"


@pytest.fixture(scope="module")
def ubc_items(ubc_dir) -> dict[str, PackageManifest]:
    """Manifests of the nine UBC item packages, by handle."""
    manifests = [manifest_of(path) for path in sorted(ubc_dir.glob("ITEM@*.zip"))]
    return {manifest.handle: manifest for manifest in manifests}


@pytest.fixture(scope="module")
def ubc_collection(ubc_dir) -> PackageManifest:
    return manifest_of(ubc_dir / UBC_TOP_PACKAGE)


@pytest.fixture
def ubc_parent(admin) -> Community:
    """The UBC collection's parent community, which the samples do not include."""
    return Community.objects.create(handle=handle_row(UBC_PARENT, "COMMUNITY"), name="frontier")


@pytest.fixture
def ubc_restored(ubc_parent, ubc_dir) -> Collection:
    packager("-r", "-a", str(ubc_dir / UBC_TOP_PACKAGE))
    return Collection.objects.get(handle__handle=UBC_COLLECTION)


@pytest.fixture
def ubc_export(ubc_restored, tmp_path) -> Path:
    """Export the restored UBC collection recursively and return the folder of packages."""
    folder = tmp_path / "export"
    packager("-d", "-a", "-i", UBC_COLLECTION, str(folder / "COLLECTION@2429-1314.zip"))
    return folder


def exported_item(folder: Path, handle: str) -> PackageManifest:
    return manifest_of(folder / f"ITEM@{handle.replace('/', '-')}.zip")


# --- UBC collection: restore --------------------------------------------------------------


def test_ubc_restore_collection(ubc_restored, ubc_parent):
    assert ubc_restored.community == ubc_parent
    assert ubc_restored.name == "frontier, issue 1, May 2006"


def test_ubc_restore_collection_metadata(ubc_restored, ubc_collection):
    # Empty DIM elements mean "unset", and dc.identifier.uri comes from the handle.
    sample = [
        (element, qualifier, value)
        for _, element, qualifier, value, _ in dim_tuples(dim_of(ubc_collection.descriptive))
        if value and (element, qualifier) != ("identifier", "uri")
    ]
    stored = [(element, qualifier, value) for _, element, qualifier, value, _ in stored_dim_tuples(ubc_restored)]

    assert stored == sample
    assert [element for element, _, _ in stored] == ["description", "title"]


def test_ubc_restore_items(ubc_restored, ubc_items):
    items = Item.objects.filter(handle__isnull=False)

    assert sorted(items.values_list("handle__handle", flat=True)) == sorted(ubc_items)
    for item in items:
        assert item.owning_collection == ubc_restored, item.handle
        assert item.in_archive, item.handle


def test_ubc_restore_item_dates(ubc_restored, ubc_items):
    for handle, manifest in ubc_items.items():
        item = Item.objects.get(handle__handle=handle)
        assert item.last_modified == manifest.last_modified, handle


def test_ubc_restore_file_fixity(ubc_restored, ubc_items, bitstream_storage):
    checked = 0
    for handle, manifest in ubc_items.items():
        for bundle in manifest.bundles:
            for record in bundle.files:
                bitstream = Bitstream.objects.get(
                    bundle__item__handle__handle=handle, bundle__name=bundle.name, name=record.admin.premis.original_name
                )
                assert file_md5_and_size(bitstream) == (record.admin.premis.digest, record.admin.premis.size), (
                    f"{handle} {record.href}"
                )
                checked += 1

    assert checked == 27
    assert len(stored_files(bitstream_storage)) == 27


def test_ubc_restore_bundles(ubc_restored, ubc_items):
    for handle in ubc_items:
        item = Item.objects.get(handle__handle=handle)
        names = list(item.bundles.order_by("position").values_list("name", flat=True))
        assert names == ["ORIGINAL", "LICENSE", "TEXT"], handle


def test_ubc_restore_text_names(ubc_restored, ubc_items):
    for handle, manifest in ubc_items.items():
        expected = [record.admin.premis.original_name for bundle in manifest.bundles if bundle.name == "TEXT" for record in bundle.files]
        stored = Bitstream.objects.filter(bundle__item__handle__handle=handle, bundle__name="TEXT")
        assert list(stored.order_by("position").values_list("name", flat=True)) == expected, handle
        assert expected[0].endswith(".pdf.txt"), handle


def test_ubc_restore_no_primary_bitstream(ubc_restored, ubc_items):
    # No UBC package names a primary bitstream (an fptr directly under div0), so none is set.
    for handle, manifest in ubc_items.items():
        original = Item.objects.get(handle__handle=handle).bundles.get(name="ORIGINAL")
        assert manifest.primary_file_id is None, handle
        assert original.primary_bitstream is None, handle


def test_ubc_restore_item_metadata(ubc_restored, ubc_items):
    for handle, manifest in ubc_items.items():
        item = Item.objects.get(handle__handle=handle)
        assert stored_dim_tuples(item) == dim_tuples(dim_of(manifest.descriptive)), handle


def test_ubc_restore_item_submitter(ubc_restored, ubc_items):
    for handle in ubc_items:
        item = Item.objects.select_related("submitter").get(handle__handle=handle)
        assert item.submitter is not None, handle
        assert item.submitter.email == "submitter@example.org", handle


def test_ubc_restore_item_template(ubc_restored, ubc_collection):
    template = ubc_restored.template_item
    values = {(element, qualifier): value for _, element, qualifier, value, _ in stored_dim_tuples(template)}

    assert values[("publisher", None)] == "Office of the Vice President Research, The University of British Columbia"
    assert stored_dim_tuples(template) == dim_tuples(dim_of(ubc_collection.template_descriptive))
    assert template.handle is None
    assert template.owning_collection is None


def test_ubc_restore_groups(ubc_restored):
    roles = {
        "admin": ubc_restored.admin_group,
        "submitters": ubc_restored.submitters_group,
        "workflow step 2": ubc_restored.workflow_step_2,
    }

    for role, group in roles.items():
        assert group is not None, role
        assert sorted(group.members.values_list("email", flat=True)) == UBC_GROUP_MEMBERS, role
    assert roles["admin"].name == f"COLLECTION_{ubc_restored.uuid}_ADMIN"
    assert ubc_restored.workflow_step_1 is None
    assert ubc_restored.workflow_step_3 is None
    assert Group.objects.count() == 2 + 3


def test_ubc_restore_collection_policies(ubc_restored):
    stored = sorted((policy.action, policy.group.name) for policy in ubc_restored.policies.select_related("group"))
    prefix = f"COLLECTION_{ubc_restored.uuid}"

    assert stored == [
        (0, "Anonymous"),
        (3, f"{prefix}_SUBMIT"),
        (3, f"{prefix}_WORKFLOW_STEP_2"),
        (9, "Anonymous"),
        (10, "Anonymous"),
        (11, f"{prefix}_ADMIN"),
    ]


def test_ubc_restore_bitstream_group_policy(ubc_restored):
    # The TEXT files of the samples grant READ to the collection's admin group by its handle-based name.
    text_policies = [
        policy.group.name
        for bitstream in Bitstream.objects.filter(bundle__name="TEXT")
        for policy in bitstream.policies.select_related("group")
    ]

    assert len(text_policies) == 9
    assert set(text_policies) == {f"COLLECTION_{ubc_restored.uuid}_ADMIN"}


def test_ubc_restore_under_other_parent(admin, ubc_dir, ubc_items):
    other = Community.objects.create(handle=handle_row("2429/5000", "COMMUNITY"), name="Other")

    packager("-r", "-a", "-o", "ignoreParent=true", "-p", "2429/5000", str(ubc_dir / UBC_TOP_PACKAGE))

    collection = Collection.objects.get(handle__handle=UBC_COLLECTION)
    assert collection.community == other
    assert Item.objects.filter(owning_collection=collection, handle__isnull=False).count() == len(ubc_items)
    assert not Handle.objects.filter(handle=UBC_PARENT).exists()


def test_ubc_submit_collection(admin, ubc_dir):
    community = Community.objects.create(handle=handle_row("123456789/100", "COMMUNITY"), name="Submissions")

    packager("-s", "-p", community.handle.handle, str(ubc_dir / UBC_TOP_PACKAGE))

    collection = Collection.objects.get(community=community)
    assert collection.handle.handle != UBC_COLLECTION
    assert collection.submitters_group.name == f"COLLECTION_{collection.uuid}_SUBMIT"


# --- UBC collection: export after restore -------------------------------------------------


def test_ubc_export_package_names(ubc_export, ubc_dir):
    expected = {"COLLECTION@2429-1314.zip"} | {path.name for path in ubc_dir.glob("ITEM@*.zip")}

    assert {path.name for path in ubc_export.iterdir()} == expected


def test_ubc_export_collection_metadata(ubc_export, ubc_collection):
    exported = manifest_of(ubc_export / "COLLECTION@2429-1314.zip")

    assert exported.handle == ubc_collection.handle
    assert dim_tuples(dim_of(exported.descriptive)) == dim_tuples(dim_of(ubc_collection.descriptive))
    assert dim_tuples(dim_of(exported.template_descriptive)) == dim_tuples(dim_of(ubc_collection.template_descriptive))


def test_ubc_export_collection_structure(ubc_export, ubc_collection):
    exported = manifest_of(ubc_export / "COLLECTION@2429-1314.zip")

    assert [child.href for child in exported.children] == [child.href for child in ubc_collection.children]
    assert [child.handle for child in exported.children] == [child.handle for child in ubc_collection.children]
    assert exported.parent_handle == ubc_collection.parent_handle == UBC_PARENT


def test_ubc_export_collection_groups(ubc_export, ubc_collection):
    exported = manifest_of(ubc_export / "COLLECTION@2429-1314.zip")

    def groups(manifest):
        return sorted((g.name, g.type, sorted(g.member_emails), g.member_group_names) for g in manifest.admin.roles.groups)

    assert groups(exported) == groups(ubc_collection)


def test_ubc_export_collection_policies(ubc_export, ubc_collection):
    exported = manifest_of(ubc_export / "COLLECTION@2429-1314.zip")

    assert policy_keys(exported.admin.policies) == policy_keys(ubc_collection.admin.policies)


def test_ubc_export_collection_techmd(ubc_export, ubc_collection):
    exported = manifest_of(ubc_export / "COLLECTION@2429-1314.zip")
    # Further parent communities (isReferencedBy) are not restored, as in DSpace.
    compared_fields = [("identifier", "uri"), ("relation", "isPartOf")]

    def fields(manifest):
        return [
            (v.element, v.qualifier, v.value)
            for v in manifest.admin.techmd_dim
            if (v.element, v.qualifier) in compared_fields
        ]

    assert fields(exported) == fields(ubc_collection)


def test_ubc_export_item_metadata(ubc_export, ubc_items):
    for handle, sample in ubc_items.items():
        exported = exported_item(ubc_export, handle)
        assert dim_tuples(dim_of(exported.descriptive)) == dim_tuples(dim_of(sample.descriptive)), handle


def test_ubc_export_item_identity(ubc_export, ubc_items):
    for handle, sample in ubc_items.items():
        exported = exported_item(ubc_export, handle)
        assert exported.handle == handle
        assert exported.parent_handle == sample.parent_handle == UBC_COLLECTION, handle
        assert exported.last_modified == sample.last_modified, handle


def test_ubc_export_item_techmd(ubc_export, ubc_items):
    for handle, sample in ubc_items.items():
        exported = exported_item(ubc_export, handle)
        assert dim_tuples(exported.admin.techmd_dim) == dim_tuples(sample.admin.techmd_dim), handle


def test_ubc_export_item_files(ubc_export, ubc_items):
    def files(manifest):
        return [
            (bundle.name, record.sequence_id, record.admin.premis.original_name, record.admin.premis.digest, record.admin.premis.size)
            for bundle in manifest.bundles
            for record in bundle.files
        ]

    for handle, sample in ubc_items.items():
        assert files(exported_item(ubc_export, handle)) == files(sample), handle


def test_ubc_export_item_filesec_checksums(ubc_export, ubc_items):
    for handle, sample in ubc_items.items():
        exported = exported_item(ubc_export, handle)
        exported_files = [(r.size, r.checksum, r.checksum_type) for b in exported.bundles for r in b.files]
        sample_files = [(r.size, r.checksum, r.checksum_type) for b in sample.bundles for r in b.files]
        assert exported_files == sample_files, handle


def test_ubc_export_bitstream_techmd(ubc_export, ubc_items):
    # Support level and MIME type come from this installation's format registry, so they may differ.
    compared_fields = [("title", None), ("title", "alternative"), ("description", None), ("format", "medium")]

    def fields(manifest):
        return [
            [(v.element, v.qualifier, v.value) for v in record.admin.techmd_dim if (v.element, v.qualifier) in compared_fields]
            for bundle in manifest.bundles
            for record in bundle.files
        ]

    for handle, sample in ubc_items.items():
        assert fields(exported_item(ubc_export, handle)) == fields(sample), handle


def test_ubc_export_item_policies(ubc_export, ubc_items):
    def policies(manifest):
        keys = [policy_keys(manifest.admin.policies)]
        for bundle in manifest.bundles:
            keys.append(policy_keys(bundle.admin.policies))
            keys.extend(policy_keys(record.admin.policies) for record in bundle.files)
        return keys

    for handle, sample in ubc_items.items():
        assert policies(exported_item(ubc_export, handle)) == policies(sample), handle


def test_ubc_export_derivative_links(ubc_export, ubc_items):
    for handle in ubc_items:
        bundles = {bundle.name: bundle for bundle in exported_item(ubc_export, handle).bundles}
        pdf = bundles["ORIGINAL"].files[0]
        text = bundles["TEXT"].files[0]
        assert text.group_id == f"GROUP_{pdf.id}", handle


def test_ubc_export_deposit_licence(ubc_export, ubc_items):
    for handle in ubc_items:
        exported = exported_item(ubc_export, handle)
        licence = next(bundle for bundle in exported.bundles if bundle.name == "LICENSE").files[0]
        assert exported.admin.license_hrefs == {"DSpaceDepositLicense": licence.href}, handle


def test_ubc_export_item_file_entries(ubc_export, ubc_items):
    for handle in ubc_items:
        path = ubc_export / f"ITEM@{handle.replace('/', '-')}.zip"
        records = [record for bundle in manifest_of(path).bundles for record in bundle.files]
        with zipfile.ZipFile(path) as archive:
            for record in records:
                assert hashlib.md5(archive.read(record.href)).hexdigest() == record.checksum, f"{handle} {record.href}"


# --- DSpace documentation samples: site ---------------------------------------------------


def test_site_restore_rejects_existing_groups(admin, docs_dir, bitstream_storage):
    before = database_snapshot()

    with pytest.raises(CommandError, match="Group Administrator already exists"):
        packager("-r", str(docs_dir / "SITE-example.zip"))

    assert database_snapshot() == before
    assert stored_files(bitstream_storage) == []


def test_site_replace_restores_people(admin, docs_dir):
    packager("-r", "-f", "-u", str(docs_dir / "SITE-example.zip"))

    people = {person.email: person for person in EPerson.objects.exclude(email=ADMIN_EMAIL)}
    assert sorted(people) == ["blah@blah.org", "curator@example.org"]
    assert people["curator@example.org"].first_name == "Alex"
    assert people["curator@example.org"].last_name == "Curator"
    assert people["curator@example.org"].language == "en"
    assert people["curator@example.org"].can_log_in is True


def test_site_replace_restores_administrators(admin, docs_dir):
    packager("-r", "-f", "-u", str(docs_dir / "SITE-example.zip"))

    members = Group.objects.get(name=Group.ADMINISTRATOR).members.values_list("email", flat=True)
    assert sorted(members) == sorted(["blah@blah.org", "curator@example.org", ADMIN_EMAIL])


def test_site_replace_defers_object_groups(admin, docs_dir, capsys):
    packager("-r", "-f", "-u", str(docs_dir / "SITE-example.zip"))

    output = capsys.readouterr().out
    assert sorted(Group.objects.values_list("name", flat=True)) == ["Administrator", "Anonymous"]
    assert "Group COLLECTION_hdl:123456789/2_ADMIN deferred" in output
    assert "Group COLLECTION_hdl:123456789/57_DEFAULT_READ deferred" in output


def test_site_replace_sets_site_name(admin, docs_dir):
    packager("-r", "-f", "-u", str(docs_dir / "SITE-example.zip"))

    assert Site.objects.get().name == "DSpace at My University"


def test_site_replace_fills_restored_collection_groups(admin, docs_dir):
    packager("-r", "-a", "-o", "skipIfParentMissing=true", str(docs_dir / "COMMUNITY@123456789-1.zip"))
    collection = Collection.objects.get(handle__handle="123456789/2")

    packager("-r", "-f", "-u", str(docs_dir / "SITE-example.zip"))

    collection.refresh_from_db()
    prefix = f"COLLECTION_{collection.uuid}_"
    assert list(collection.admin_group.members.values_list("email", flat=True)) == ["curator@example.org"]
    assert Group.objects.filter(name__startswith=prefix).count() == 6
    assert not Group.objects.filter(name__contains="hdl:").exists()
    assert EPerson.objects.get(email="curator@example.org").first_name == "Alex"


def test_site_recursive_replace_restores_tree(admin, docs_dir, capsys):
    packager("-r", "-a", "-f", "-u", "-o", "skipIfParentMissing=true", str(docs_dir / "SITE-example.zip"))

    errors = capsys.readouterr().err
    community = Community.objects.get(handle__handle="123456789/1")
    collection = Collection.objects.get(handle__handle="123456789/2")
    assert community.parent is None
    assert collection.community == community
    assert list(collection.admin_group.members.values_list("email", flat=True)) == ["curator@example.org"]
    assert errors.count("is missing from") == 10


# --- DSpace documentation samples: community and collection -------------------------------


def test_community_restore_skips_missing_children(admin, docs_dir, tmp_path, capsys):
    # Alone in its folder, every child package the community lists is missing.
    folder = tmp_path / "packages"
    folder.mkdir()
    shutil.copy(docs_dir / "COMMUNITY@123456789-1.zip", folder)

    packager("-r", "-a", "-o", "skipIfParentMissing=true", str(folder / "COMMUNITY@123456789-1.zip"))

    errors = capsys.readouterr().err
    for name in ("COMMUNITY@123456789-6701", "COLLECTION@123456789-2", "COLLECTION@123456789-5",
                 "COLLECTION@123456789-57", "COLLECTION@123456789-6697"):
        assert f"Child package {name}.zip is missing" in errors, name
    assert list(Community.objects.values_list("handle__handle", flat=True)) == ["123456789/1"]
    assert not Collection.objects.exists()


def test_community_restore_metadata(admin, docs_dir):
    packager("-r", "-o", "skipIfParentMissing=true", str(docs_dir / "COMMUNITY@123456789-1.zip"))

    community = Community.objects.get(handle__handle="123456789/1")
    values = [(element, qualifier, value) for _, element, qualifier, value, _ in stored_dim_tuples(community)]
    assert community.parent is None
    assert community.name == "Test Community"
    assert values == [
        ("description", None, "intro text"),
        ("description", "tableofcontents", "news text"),
        ("rights", None, "Copyright me"),
        ("title", None, "Test Community"),
    ]
    assert [(policy.action, policy.group.name) for policy in community.policies.all()] == [(0, "Anonymous")]


def test_community_recursive_restore_includes_collection(admin, docs_dir, capsys):
    packager("-r", "-a", "-o", "skipIfParentMissing=true", str(docs_dir / "COMMUNITY@123456789-1.zip"))

    errors = capsys.readouterr().err
    collection = Collection.objects.get(handle__handle="123456789/2")
    assert collection.community.handle.handle == "123456789/1"
    for name in ("ITEM@123456789-459", "ITEM@123456789-3", "ITEM@123456789-4"):
        assert f"Child package {name}.zip is missing" in errors, name
    assert not Item.objects.filter(handle__isnull=False).exists()


def test_collection_restore_under_community(admin, docs_dir, tmp_path):
    folder = tmp_path / "packages"
    folder.mkdir()
    shutil.copy(docs_dir / "COMMUNITY@123456789-1.zip", folder)
    packager("-r", str(folder / "COMMUNITY@123456789-1.zip"))

    packager("-r", str(docs_dir / "COLLECTION@123456789-2.zip"))

    collection = Collection.objects.get(handle__handle="123456789/2")
    assert collection.community == Community.objects.get(handle__handle="123456789/1")
    assert collection.name == "Test Collection"


def test_collection_restore_role_groups(admin, docs_dir):
    packager("-r", "-a", "-o", "skipIfParentMissing=true", str(docs_dir / "COMMUNITY@123456789-1.zip"))

    collection = Collection.objects.get(handle__handle="123456789/2")
    prefix = f"COLLECTION_{collection.uuid}_"
    assert collection.admin_group.name == prefix + "ADMIN"
    assert collection.submitters_group.name == prefix + "SUBMIT"
    assert collection.workflow_step_1.name == prefix + "WORKFLOW_STEP_1"
    assert collection.workflow_step_2.name == prefix + "WORKFLOW_STEP_2"
    assert collection.workflow_step_3.name == prefix + "WORKFLOW_STEP_3"
    assert Group.objects.filter(name=prefix + "DEFAULT_READ").exists()


def test_collection_restore_policies(admin, docs_dir):
    packager("-r", "-a", "-o", "skipIfParentMissing=true", str(docs_dir / "COMMUNITY@123456789-1.zip"))

    collection = Collection.objects.get(handle__handle="123456789/2")
    prefix = f"COLLECTION_{collection.uuid}_"
    stored = sorted((policy.action, policy.group.name) for policy in collection.policies.select_related("group"))
    assert stored == [
        (0, "Anonymous"),
        (3, prefix + "SUBMIT"),
        (3, prefix + "WORKFLOW_STEP_1"),
        (3, prefix + "WORKFLOW_STEP_2"),
        (3, prefix + "WORKFLOW_STEP_3"),
        (9, prefix + "DEFAULT_READ"),
        (10, prefix + "DEFAULT_READ"),
        (11, prefix + "ADMIN"),
    ]


def test_collection_restore_keeps_carriage_returns(admin, docs_dir):
    packager("-r", "-a", "-o", "skipIfParentMissing=true", str(docs_dir / "COMMUNITY@123456789-1.zip"))

    collection = Collection.objects.get(handle__handle="123456789/2")
    licence = collection.metadata.get(field__element="rights", field__qualifier="license").value
    assert licence.startswith("This collection has a license<p>after p tag\r\n")
    assert licence.count("\r") == 4


def test_collection_export_keeps_carriage_returns(admin, docs_dir, tmp_path):
    packager("-r", "-a", "-o", "skipIfParentMissing=true", str(docs_dir / "COMMUNITY@123456789-1.zip"))
    path = tmp_path / "export" / "COLLECTION@123456789-2.zip"

    packager("-d", "-i", "123456789/2", str(path))

    sample = manifest_of(docs_dir / "COLLECTION@123456789-2.zip")
    assert dim_tuples(dim_of(manifest_of(path).descriptive)) == dim_tuples(dim_of(sample.descriptive))


# --- DSpace documentation samples: item ---------------------------------------------------


def test_item_restore_skips_missing_parent(admin, docs_dir, bitstream_storage, capsys):
    before = database_snapshot()

    packager("-r", "-o", "skipIfParentMissing=true", str(docs_dir / "ITEM@123456789-8.zip"))

    assert "Could not find a parent DSpaceObject referenced as '123456789/5'" in capsys.readouterr().err
    assert database_snapshot() == before
    assert stored_files(bitstream_storage) == []


def test_item_restore_fails_without_parent(admin, docs_dir, bitstream_storage):
    before = database_snapshot()

    with pytest.raises(CommandError, match="Could not find a parent DSpaceObject referenced as '123456789/5'"):
        packager("-r", str(docs_dir / "ITEM@123456789-8.zip"))

    assert database_snapshot() == before
    assert stored_files(bitstream_storage) == []


@pytest.fixture
def target_collection(admin) -> Collection:
    community = Community.objects.create(handle=handle_row("123456789/100", "COMMUNITY"), name="Submissions")
    return Collection.objects.create(handle=handle_row("123456789/101", "COLLECTION"), community=community, name="Inbox")


@pytest.fixture
def submitted_item(target_collection, docs_dir) -> Item:
    packager("-s", "-p", target_collection.handle.handle, str(docs_dir / "ITEM@123456789-8.zip"))
    return Item.objects.get(owning_collection=target_collection)


def test_item_submit_new_handle(submitted_item):
    assert submitted_item.handle.handle.startswith("123456789/")
    assert submitted_item.handle.handle not in ("123456789/8", "123456789/100", "123456789/101")
    assert submitted_item.in_archive is True
    assert submitted_item.name == "Test PDF Document"


def test_item_submit_stores_files(submitted_item, docs_dir, bitstream_storage):
    sample = manifest_of(docs_dir / "ITEM@123456789-8.zip")
    records = [record for bundle in sample.bundles for record in bundle.files]

    # The package's three files, and the deposit licence every submission gets.
    assert len(stored_files(bitstream_storage)) == 4
    for record in records:
        bitstream = (
            Bitstream.objects.filter(bundle__item=submitted_item, name=record.admin.premis.original_name)
            .order_by("sequence_id")
            .first()
        )
        assert file_md5_and_size(bitstream) == (record.admin.premis.digest, record.admin.premis.size), record.href
        assert bitstream.checksum == record.admin.premis.digest, record.href


def test_item_submit_keeps_non_ascii_abstract(submitted_item):
    abstract = submitted_item.metadata.get(field__element="description", field__qualifier="abstract")

    assert abstract.value == (
        "This is really just a sample abstract.  But, Í’vé thrown ïn a cõuple of spëciâl charactèrs för êxtrå fuñ!"
    )
    assert abstract.language == "en_US"
