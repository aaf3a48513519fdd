"""Export tests on the generated demo repository: package files, zip layout,
determinism, schema validity, the METS content, and bad input."""
from __future__ import annotations

import hashlib
import zipfile
from datetime import timezone
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from lxml import etree

from aip.errors import InvalidPackageError
from aip.mets.model import PackageManifest
from aip.mets.reader import read_manifest
from aip.mets.validation import validate_manifest
from aip.options import ExportOptions
from aip.selectors import site_get
from aip.services.export import object_export
from repository.models import Bitstream, Collection, Community, EPerson, Group, Item, ResourcePolicy
from tests.aip.conftest import ADMIN_EMAIL, export_site, manifest_text, package_bytes, packager

pytestmark = pytest.mark.django_db

NS = {
    "mets": "http://www.loc.gov/METS/",
    "xlink": "http://www.w3.org/1999/xlink",
    "dim": "http://www.dspace.org/xmlns/dspace/dim",
    "mods": "http://www.loc.gov/mods/v3",
    "premis": "http://www.loc.gov/standards/premis",
    "rights": "http://cosimo.stanford.edu/sdr/metsrights/",
}
DSPACE_AIP_PROFILE = "http://www.dspace.org/schema/aip/mets_aip_1_0.xsd"
# DSpace 7+ writes this entry time into every package that is not an item's.
CONTAINER_ENTRY_TIME = (2002, 11, 4, 0, 0, 0)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def export_dir(tmp_path) -> Path:
    """An empty folder for packages, separate from the bitstream storage that also lives under tmp_path."""
    folder = tmp_path / "export"
    folder.mkdir()
    return folder


@pytest.fixture
def site_export(demo, export_dir) -> Path:
    """Export the whole demo repository and return the folder of packages."""
    export_site(export_dir)
    return export_dir


def package_name(obj) -> str:
    return f"{obj.object_type}@{obj.handle.handle.replace('/', '-')}.zip"


def export_object(obj, folder: Path) -> Path:
    path = folder / package_name(obj)
    packager("-d", "-i", obj.handle.handle, str(path))
    return path


def manifest_of(path: Path) -> PackageManifest:
    return read_manifest(manifest_text(path).encode("utf-8"), source=path.name)


def mets_root(path: Path) -> etree._Element:
    with zipfile.ZipFile(path) as archive:
        return etree.fromstring(archive.read("mets.xml"))


def dim_tuples(values) -> list[tuple]:
    return [(v.schema, v.element, v.qualifier, v.value, v.language, v.authority) for v in values]


def stored_dim_tuples(obj) -> list[tuple]:
    return [
        (v.field.schema.short_id, v.field.element, v.field.qualifier, v.value, v.language, v.authority)
        for v in obj.metadata.select_related("field__schema").order_by("place", "id")
    ]


def dim_section(manifest: PackageManifest):
    return next(section for section in manifest.descriptive if section.md_type == "DIM")


def dos_time(moment) -> tuple[int, ...]:
    """Return ``moment`` in UTC as a zip stores it: DOS time counts seconds in steps of two."""
    utc = moment.astimezone(timezone.utc)
    return (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second // 2 * 2)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
def embargoed_item(demo) -> Item:
    """The demo item with a named, dated, described policy for one EPerson."""
    return ResourcePolicy.objects.get(name="embargo").item


@pytest.fixture
def mapped_item(demo) -> Item:
    return Item.objects.get(mapped_collections__isnull=False)


@pytest.fixture
def withdrawn_item(demo) -> Item:
    return Item.objects.get(withdrawn=True)


@pytest.fixture
def template_collection(demo) -> Collection:
    return Collection.objects.get(template_item__isnull=False)


@pytest.fixture
def logo_community(demo) -> Community:
    return Community.objects.get(logo__isnull=False)


# --- package files ------------------------------------------------------------------------


def test_site_export_package_names(site_export):
    containers = list(Community.objects.all()) + list(Collection.objects.all())
    items = list(Item.objects.filter(handle__isnull=False))
    expected = {"SITE@123456789-0.zip"} | {package_name(obj) for obj in containers + items}

    assert len(expected) == 16
    assert set(files_in(site_export)) == expected


def test_site_export_includes_withdrawn_item(site_export, withdrawn_item):
    assert (site_export / package_name(withdrawn_item)).is_file()


def test_site_export_manifest_first(site_export):
    for path in site_export.glob("*.zip"):
        with zipfile.ZipFile(path) as archive:
            assert archive.infolist()[0].filename == "mets.xml", path.name


def test_site_export_container_entry_times(site_export):
    for path in site_export.glob("*.zip"):
        if path.name.startswith("ITEM@"):
            continue
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                assert info.date_time == CONTAINER_ENTRY_TIME, f"{path.name} {info.filename}"


def test_site_export_item_entry_times(site_export):
    for item in Item.objects.filter(handle__isnull=False):
        with zipfile.ZipFile(site_export / package_name(item)) as archive:
            for info in archive.infolist():
                assert info.date_time == dos_time(item.last_modified), f"{item.handle} {info.filename}"


def test_site_export_zip_comment(site_export):
    for path in site_export.glob("*.zip"):
        with zipfile.ZipFile(path) as archive:
            assert archive.comment.startswith(b"METS archive created by "), path.name


def test_site_export_twice_identical(demo, tmp_path):
    first = tmp_path / "first"
    second = tmp_path / "second"
    export_site(first)
    export_site(second)

    first_packages = package_bytes(first)
    second_packages = package_bytes(second)
    assert sorted(first_packages) == sorted(second_packages)
    for name, data in first_packages.items():
        assert data == second_packages[name], name


def test_item_export_writes_one_file(embargoed_item, export_dir):
    export_object(embargoed_item, export_dir)

    assert files_in(export_dir) == [package_name(embargoed_item)]


def test_item_export_recursive_writes_one_file(embargoed_item, export_dir):
    path = export_dir / package_name(embargoed_item)
    packager("-d", "-a", "-i", embargoed_item.handle.handle, str(path))

    assert files_in(export_dir) == [path.name]


def test_item_export_entries(embargoed_item, export_dir):
    path = export_object(embargoed_item, export_dir)
    bitstreams = Bitstream.objects.filter(bundle__item=embargoed_item)

    with zipfile.ZipFile(path) as archive:
        names = [info.filename for info in archive.infolist()]
        digests = {hashlib.md5(archive.read(name)).hexdigest() for name in names[1:]}
    assert len(names) == 1 + bitstreams.count()
    assert digests == {bitstream.checksum for bitstream in bitstreams}


# --- schema validation --------------------------------------------------------------------


def test_site_export_schema_valid(site_export, schema_dir):
    for path in sorted(site_export.glob("*.zip")):
        validate_manifest(manifest_text(path).encode("utf-8"), schema_dir=str(schema_dir), source=path.name)


def test_dated_policy_schema_valid(embargoed_item, export_dir, schema_dir):
    path = export_object(embargoed_item, export_dir)
    root = mets_root(path)
    contexts = root.xpath("//rights:Context[@rpName and @start-date]", namespaces=NS)
    ended = root.xpath("//rights:Context[@end-date]", namespaces=NS)

    assert contexts
    assert ended
    validate_manifest(manifest_text(path).encode("utf-8"), schema_dir=str(schema_dir), source=path.name)


def test_empty_template_schema_valid(template_collection, export_dir, schema_dir):
    template_collection.template_item.metadata.all().delete()
    path = export_object(template_collection, export_dir)

    validate_manifest(manifest_text(path).encode("utf-8"), schema_dir=str(schema_dir), source=path.name)


def test_schema_rejects_undeclared_context_attribute(embargoed_item, export_dir, schema_dir):
    path = export_object(embargoed_item, export_dir)
    root = mets_root(path)
    root.xpath("//rights:Context", namespaces=NS)[0].set("colour", "red")
    data = etree.tostring(root, xml_declaration=True, encoding="utf-8")

    with pytest.raises(InvalidPackageError, match="colour"):
        validate_manifest(data, schema_dir=str(schema_dir), source=path.name)


# --- METS content -------------------------------------------------------------------------


def test_item_mets_root_attributes(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))

    assert root.get("PROFILE") == DSPACE_AIP_PROFILE
    assert root.get("ID") == f"DSpace_ITEM_DB-ID-{embargoed_item.uuid}"
    assert root.get("OBJID") == f"hdl:{embargoed_item.handle.handle}"
    assert root.get("TYPE") == "DSpace ITEM"


def test_item_mets_header_agents(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    agents = {agent.get("ROLE"): agent for agent in root.xpath("mets:metsHdr/mets:agent", namespaces=NS)}

    assert sorted(agents) == ["CREATOR", "CUSTODIAN"]
    assert agents["CUSTODIAN"].get("OTHERTYPE") == "DSpace Archive"
    assert agents["CUSTODIAN"].findtext("mets:name", namespaces=NS) == "123456789/0"
    assert agents["CREATOR"].get("OTHERTYPE") == "DSpace Software"
    assert root.find("mets:metsHdr", NS).get("CREATEDATE") is None


def test_item_mets_links_simple(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    links = root.xpath("//mets:mptr | //mets:FLocat | //mets:mdRef", namespaces=NS)

    assert len(links) > 1
    for link in links:
        assert link.get(f"{{{NS['xlink']}}}type") == "simple", etree.QName(link).localname


def test_item_mets_lastmoddate(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    expected = embargoed_item.last_modified.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    assert root.find("mets:metsHdr", NS).get("LASTMODDATE") == expected


def test_item_mets_dmdsec_types(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    wraps = root.xpath("mets:dmdSec/mets:mdWrap", namespaces=NS)

    assert [(wrap.get("MDTYPE"), wrap.get("OTHERMDTYPE")) for wrap in wraps] == [("MODS", None), ("OTHER", "DIM")]
    assert root.xpath("mets:dmdSec/mets:mdWrap/mets:xmlData/mods:mods", namespaces=NS)


def test_item_mets_dim_values(embargoed_item, export_dir):
    manifest = manifest_of(export_object(embargoed_item, export_dir))

    assert dim_tuples(dim_section(manifest).dim) == stored_dim_tuples(embargoed_item)


def test_item_mets_dim_confidence(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    authors = root.xpath("//dim:field[@element='contributor'][@qualifier='author']", namespaces=NS)

    assert authors
    assert {field.get("confidence") for field in authors} == {"ACCEPTED"}


def test_item_mets_premis_per_file(embargoed_item, export_dir):
    manifest = manifest_of(export_object(embargoed_item, export_dir))
    premis = {
        record.admin.premis.original_name: record.admin.premis
        for bundle in manifest.bundles
        for record in bundle.files
    }
    bitstreams = Bitstream.objects.filter(bundle__item=embargoed_item)

    assert sorted(premis) == sorted(bitstream.name for bitstream in bitstreams)
    for bitstream in bitstreams:
        assert premis[bitstream.name].digest_algorithm == "MD5", bitstream.name
        assert premis[bitstream.name].digest == bitstream.checksum, bitstream.name
        assert premis[bitstream.name].size == bitstream.size_bytes, bitstream.name


def test_item_mets_techmd_submitter(embargoed_item, export_dir):
    techmd = manifest_of(export_object(embargoed_item, export_dir)).admin.techmd_dim
    fields = [(value.element, value.qualifier, value.value) for value in techmd]

    assert ("creator", None, embargoed_item.submitter.email) in fields
    assert ("identifier", "uri", f"hdl:{embargoed_item.handle.handle}") in fields
    assert ("relation", "isPartOf", f"hdl:{embargoed_item.owning_collection.handle.handle}") in fields


def test_mapped_item_techmd_references(mapped_item, export_dir):
    techmd = manifest_of(export_object(mapped_item, export_dir)).admin.techmd_dim
    references = [value.value for value in techmd if value.qualifier == "isReferencedBy"]
    expected = [f"hdl:{collection.handle.handle}" for collection in mapped_item.mapped_collections.all()]

    assert references == expected


def test_withdrawn_item_techmd(withdrawn_item, export_dir):
    techmd = manifest_of(export_object(withdrawn_item, export_dir)).admin.techmd_dim
    access_rights = [value.value for value in techmd if (value.element, value.qualifier) == ("rights", "accessRights")]

    assert access_rights == ["WITHDRAWN"]


def test_archived_item_techmd_not_withdrawn(embargoed_item, export_dir):
    techmd = manifest_of(export_object(embargoed_item, export_dir)).admin.techmd_dim

    assert all((value.element, value.qualifier) != ("rights", "accessRights") for value in techmd)


def test_item_mets_rights_contexts(embargoed_item, export_dir):
    policies = manifest_of(export_object(embargoed_item, export_dir)).admin.policies
    by_class = {policy.context_class: policy for policy in policies}

    assert sorted(by_class) == ["ACADEMIC USER", "GENERAL PUBLIC", "MANAGED GRP", "REPOSITORY MGR"]
    assert len(policies) == embargoed_item.policies.count()


def test_item_mets_rights_dated_policy(embargoed_item, export_dir):
    stored = ResourcePolicy.objects.get(item=embargoed_item, name="embargo")
    policies = manifest_of(export_object(embargoed_item, export_dir)).admin.policies
    exported = next(policy for policy in policies if policy.context_class == "ACADEMIC USER")

    assert exported.eperson_email == stored.eperson.email
    assert exported.action == stored.action
    assert exported.name == "embargo"
    assert exported.description == stored.description
    assert exported.start_date == stored.start_date
    assert exported.end_date is None


def test_item_mets_rights_end_date(embargoed_item, export_dir):
    stored = ResourcePolicy.objects.get(item=embargoed_item, end_date__isnull=False)
    policies = manifest_of(export_object(embargoed_item, export_dir)).admin.policies
    exported = next(policy for policy in policies if policy.context_class == "REPOSITORY MGR")

    assert exported.end_date == stored.end_date
    assert exported.start_date is None


def test_item_filesec_attributes(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    files = {element.get("ID"): element for element in root.xpath("mets:fileSec/mets:fileGrp/mets:file", namespaces=NS)}
    bitstreams = Bitstream.objects.filter(bundle__item=embargoed_item)

    assert sorted(files) == sorted(f"bitstream_{bitstream.uuid}" for bitstream in bitstreams)
    for bitstream in bitstreams:
        element = files[f"bitstream_{bitstream.uuid}"]
        assert element.get("SEQ") == str(bitstream.sequence_id), bitstream.name
        assert element.get("SIZE") == str(bitstream.size_bytes), bitstream.name
        assert element.get("CHECKSUM") == bitstream.checksum, bitstream.name
        assert element.get("CHECKSUMTYPE") == "MD5", bitstream.name


def test_item_filesec_bundles(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    uses = [group.get("USE") for group in root.xpath("mets:fileSec/mets:fileGrp", namespaces=NS)]

    assert uses == list(embargoed_item.bundles.order_by("position").values_list("name", flat=True))


def test_item_structmap_object(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    struct_maps = root.findall("mets:structMap", NS)
    div0 = struct_maps[0].find("mets:div", NS)
    primary = embargoed_item.bundles.get(name="ORIGINAL").primary_bitstream
    original = embargoed_item.bundles.get(name="ORIGINAL").bitstreams.order_by("position")

    assert [struct_map.get("LABEL") for struct_map in struct_maps] == ["DSpace Object", "Parent"]
    assert div0.get("TYPE") == "DSpace Object Contents"
    assert div0.find("mets:fptr", NS).get("FILEID") == f"bitstream_{primary.uuid}"
    assert div0.xpath("mets:div[@TYPE='DSpace BITSTREAM']/mets:fptr/@FILEID", namespaces=NS) == [
        f"bitstream_{bitstream.uuid}" for bitstream in original
    ]


def test_item_structmap_parent(embargoed_item, export_dir):
    root = mets_root(export_object(embargoed_item, export_dir))
    hrefs = root.xpath("mets:structMap[@LABEL='Parent']/mets:div/mets:mptr/@xlink:href", namespaces=NS)

    assert hrefs == [embargoed_item.owning_collection.handle.handle]


def test_site_mets_roles_groups(site_export):
    roles = manifest_of(site_export / "SITE@123456789-0.zip").admin.roles
    exported = [group.name for group in roles.groups]
    # Group names that embed a collection UUID are written with its handle instead.
    expected = []
    for group in Group.objects.order_by("name"):
        name = group.name
        for collection in Collection.objects.all():
            name = name.replace(f"COLLECTION_{collection.uuid}_", f"COLLECTION_hdl:{collection.handle.handle}_")
        expected.append(name)

    assert sorted(exported) == sorted(expected)


def test_site_mets_roles_members(site_export):
    roles = manifest_of(site_export / "SITE@123456789-0.zip").admin.roles
    groups = {group.name: group for group in roles.groups}
    staff = Group.objects.get(name="Library staff")
    reviewers = Group.objects.get(name="Reviewers")

    assert groups["Library staff"].member_emails == sorted(staff.members.values_list("email", flat=True))
    assert groups["Reviewers"].member_emails == sorted(reviewers.members.values_list("email", flat=True))
    assert groups["Reviewers"].member_group_names == ["Library staff"]
    assert groups["Administrator"].member_emails == [ADMIN_EMAIL]


def test_site_mets_roles_people(site_export):
    roles = manifest_of(site_export / "SITE@123456789-0.zip").admin.roles
    people = {person.email: person for person in roles.people}
    student = EPerson.objects.get(netid="cwei")

    assert sorted(people) == sorted(EPerson.objects.values_list("email", flat=True))
    assert people[student.email].netid == "cwei"
    assert people[student.email].self_registered is True
    assert people[student.email].password_hash is None


def test_site_mets_lists_top_communities(site_export):
    children = manifest_of(site_export / "SITE@123456789-0.zip").children
    top = Community.objects.filter(parent__isnull=True).order_by("name")

    assert [child.href for child in children] == [package_name(community) for community in top]
    assert {child.object_type for child in children} == {"COMMUNITY"}


def test_site_mets_has_no_parent(site_export):
    root = mets_root(site_export / "SITE@123456789-0.zip")

    assert [struct_map.get("LABEL") for struct_map in root.findall("mets:structMap", NS)] == ["DSpace Object"]
    assert root.get("TYPE") == "DSpace SITE"


def test_collection_template_div(template_collection, export_dir):
    root = mets_root(export_object(template_collection, export_dir))
    div0 = root.find("mets:structMap/mets:div", NS)
    template_divs = div0.xpath("mets:div[@TYPE='DSpace ITEM Template']", namespaces=NS)

    assert len(template_divs) == 1
    assert len(template_divs[0].get("DMDID").split()) == 2
    assert template_divs[0].findall("mets:mptr", NS) == []


def test_collection_template_values(template_collection, export_dir):
    manifest = manifest_of(export_object(template_collection, export_dir))
    template_dim = next(section for section in manifest.template_descriptive if section.md_type == "DIM")

    assert dim_tuples(template_dim.dim) == stored_dim_tuples(template_collection.template_item)


def test_collection_lists_mapped_item(mapped_item, export_dir):
    mapping = mapped_item.mapped_collections.get()
    children = manifest_of(export_object(mapping, export_dir)).children

    assert package_name(mapped_item) in [child.href for child in children]


def test_community_logo_fptr(logo_community, export_dir):
    path = export_object(logo_community, export_dir)
    root = mets_root(path)
    logo_files = root.xpath("mets:fileSec/mets:fileGrp[@USE='LOGO']/mets:file", namespaces=NS)
    first_child = root.find("mets:structMap/mets:div", NS)[0]

    assert len(logo_files) == 1
    assert etree.QName(first_child).localname == "fptr"
    assert first_child.get("FILEID") == logo_files[0].get("ID")


def test_community_logo_entry(logo_community, export_dir):
    path = export_object(logo_community, export_dir)
    logo = manifest_of(path).logo

    with zipfile.ZipFile(path) as archive:
        data = archive.read(logo.href)
    assert hashlib.md5(data).hexdigest() == logo_community.logo.checksum
    assert logo.checksum == logo_community.logo.checksum
    assert logo.size == len(data)


# --- bad input ----------------------------------------------------------------------------


def test_export_unknown_handle(demo, export_dir):
    with pytest.raises(CommandError, match="123456789/99999"):
        packager("-d", "-i", "123456789/99999", str(export_dir / "ITEM@123456789-99999.zip"))

    assert files_in(export_dir) == []


def test_export_missing_identifier(demo, export_dir):
    with pytest.raises(CommandError, match="-i HANDLE"):
        packager("-d", str(export_dir / "SITE@123456789-0.zip"))

    assert files_in(export_dir) == []


def test_export_unknown_eperson(demo, export_dir):
    path = export_dir / "SITE@123456789-0.zip"

    with pytest.raises(CommandError) as raised:
        call_command("packager", "-t", "AIP", "-e", "nobody@example.org", "-d", "-i", "123456789/0", str(path))

    assert "nobody@example.org" in str(raised.value)
    assert "create_administrator" in str(raised.value)
    assert files_in(export_dir) == []


def test_export_unknown_option(demo, export_dir):
    with pytest.raises(CommandError, match="'foo'"):
        packager("-d", "-i", "123456789/0", "-o", "foo=bar", str(export_dir / "SITE@123456789-0.zip"))

    assert files_in(export_dir) == []


def test_export_rejects_package_type(demo, export_dir):
    path = export_dir / "SITE@123456789-0.zip"

    with pytest.raises(CommandError, match="METS"):
        call_command("packager", "-t", "METS", "-e", ADMIN_EMAIL, "-d", "-i", "123456789/0", str(path))

    assert files_in(export_dir) == []


# --- failures while writing ---------------------------------------------------------------


def text_bitstream(item: Item) -> Bitstream:
    return Bitstream.objects.get(bundle__item=item, bundle__name="TEXT")


def test_export_missing_file_message(embargoed_item, export_dir):
    bitstream = text_bitstream(embargoed_item)
    Path(bitstream.file.path).unlink()

    with pytest.raises(CommandError) as raised:
        export_object(embargoed_item, export_dir)

    assert str(bitstream.uuid) in str(raised.value)
    assert "unauthorized=skip" in str(raised.value)


def test_export_missing_file_writes_nothing(embargoed_item, export_dir):
    Path(text_bitstream(embargoed_item).file.path).unlink()

    with pytest.raises(CommandError):
        export_object(embargoed_item, export_dir)

    assert files_in(export_dir) == []


def test_site_export_missing_file_leaves_no_partial(embargoed_item, export_dir):
    Path(text_bitstream(embargoed_item).file.path).unlink()

    with pytest.raises(CommandError):
        export_site(export_dir)

    # Packages finished before the failure stay, but the failing one is absent under any name.
    assert not (export_dir / package_name(embargoed_item)).exists()
    assert list(export_dir.glob("*.partial")) == []
    assert list(export_dir.glob(".*")) == []


def test_export_unreadable_file_leaves_no_partial(embargoed_item, export_dir):
    # A folder in place of the file passes the existence check and fails only while the zip is written.
    stored = Path(text_bitstream(embargoed_item).file.path)
    stored.unlink()
    stored.mkdir()

    with pytest.raises((CommandError, OSError)):
        export_object(embargoed_item, export_dir)

    assert files_in(export_dir) == []


def test_export_unreadable_file_message(embargoed_item, export_dir):
    bitstream = text_bitstream(embargoed_item)
    stored = Path(bitstream.file.path)
    stored.unlink()
    stored.mkdir()

    with pytest.raises(CommandError) as raised:
        export_object(embargoed_item, export_dir)

    assert str(bitstream.uuid) in str(raised.value)


def test_export_target_folder_leaves_no_partial(embargoed_item, export_dir):
    target = export_dir / package_name(embargoed_item)
    target.mkdir()

    with pytest.raises((CommandError, OSError)):
        packager("-d", "-i", embargoed_item.handle.handle, str(target))

    assert files_in(export_dir) == [target.name]
    assert target.is_dir()


def test_export_target_folder_message(embargoed_item, export_dir):
    target = export_dir / package_name(embargoed_item)
    target.mkdir()

    with pytest.raises(CommandError, match=target.name):
        packager("-d", "-i", embargoed_item.handle.handle, str(target))


def test_export_unauthorized_skip(embargoed_item, export_dir):
    bitstream = text_bitstream(embargoed_item)
    Path(bitstream.file.path).unlink()
    path = export_dir / package_name(embargoed_item)

    packager("-d", "-i", embargoed_item.handle.handle, "-o", "unauthorized=skip", str(path))

    file_ids = [record.id for bundle in manifest_of(path).bundles for record in bundle.files]
    assert f"bitstream_{bitstream.uuid}" not in file_ids
    assert len(file_ids) == Bitstream.objects.filter(bundle__item=embargoed_item).count() - 1


def test_export_unauthorized_zero(embargoed_item, export_dir):
    bitstream = text_bitstream(embargoed_item)
    Path(bitstream.file.path).unlink()
    path = export_dir / package_name(embargoed_item)

    packager("-d", "-i", embargoed_item.handle.handle, "-o", "unauthorized=zero", str(path))

    record = next(
        record for bundle in manifest_of(path).bundles for record in bundle.files if record.id == f"bitstream_{bitstream.uuid}"
    )
    with zipfile.ZipFile(path) as archive:
        assert archive.read(record.href) == b""
    assert record.size == 0
    assert record.admin.premis.size == 0


def test_progress_follows_finished_packages(demo, export_dir):
    finished = []

    def progress(path: Path) -> None:
        # The package is written in another thread, and must be whole when its progress is reported.
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
        finished.append(path)

    result = object_export(
        obj=site_get(), path=export_dir / "SITE@123456789-0.zip", options=ExportOptions(recursive=True), progress=progress
    )

    assert finished == result.packages
    assert len(finished) == 16
    assert sorted(path.name for path in finished) == files_in(export_dir)


def test_export_keeps_no_children_on_instances(demo, export_dir):
    # The top instance lives for the whole export; a child list left on it would keep every item read in memory.
    site = site_get()

    object_export(obj=site, path=export_dir / "SITE@123456789-0.zip", options=ExportOptions(recursive=True))

    assert not hasattr(site, "_aip_children")
