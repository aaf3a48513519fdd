"""Tests of the METS reader: real DSpace 1.7 AIPs and small hand-written manifests."""
import zipfile
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from aip.errors import InvalidPackageError, UnsafePackageError
from aip.mets import namespaces as ns
from aip.mets import xmlsafe
from aip.mets.model import DescriptiveMetadata, DimValue, PackageManifest
from aip.mets.reader import choose_descriptive, mods_to_dim, read_manifest

# --- real samples -------------------------------------------------------------------------


def _sample(samples_dir: Path, name: str) -> PackageManifest:
    """Read the mets.xml of the sample package ``name`` found anywhere under ``samples_dir``."""
    matches = sorted(samples_dir.rglob(name))
    if not matches:
        pytest.fail(f"sample {name} is not under {samples_dir}")
    with zipfile.ZipFile(matches[0]) as package:
        return read_manifest(package.read("mets.xml"), source=name)


@pytest.fixture(scope="module")
def item_8(samples_dir):
    return _sample(samples_dir, "ITEM@123456789-8.zip")


@pytest.fixture(scope="module")
def collection_1314(samples_dir):
    return _sample(samples_dir, "aip_1314.zip")


@pytest.fixture(scope="module")
def site(samples_dir):
    return _sample(samples_dir, "SITE-example.zip")


@pytest.mark.samples
def test_samples_all_readable(samples_dir):
    packages = sorted(samples_dir.rglob("*.zip"))
    assert packages
    for path in packages:
        manifest = _sample(samples_dir, path.name)
        assert manifest.object_type in ns.OBJECT_TYPES, path.name
        assert manifest.profile == ns.PROFILE, path.name
        assert manifest.handle, path.name
        assert manifest.descriptive, path.name


@pytest.mark.samples
def test_item_identity(item_8):
    assert item_8.object_type == "ITEM"
    assert item_8.handle == "123456789/8"
    assert item_8.parent_handle == "123456789/5"
    assert item_8.uuid is None
    assert item_8.last_modified == datetime(2010, 9, 24, 10, 16, 56, tzinfo=timezone.utc)


@pytest.mark.samples
def test_item_bundles(item_8):
    assert [bundle.name for bundle in item_8.bundles] == ["ORIGINAL", "LICENSE"]
    assert [len(bundle.files) for bundle in item_8.bundles] == [2, 1]
    assert item_8.logo is None
    assert item_8.primary_file_id is None
    assert item_8.children == []


@pytest.mark.samples
def test_item_file_attributes(item_8):
    word = item_8.bundles[0].files[0]
    assert word.id == "bitstream_1"
    assert word.href == "bitstream_117.docx"
    assert word.mimetype == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert word.sequence_id == 1
    assert word.size == 10201
    assert word.checksum == "499b0e1e3936582ca4981163db5442b9"
    assert word.checksum_type == "MD5"
    assert word.group_id == "GROUP_bitstream_1"
    assert item_8.bundles[1].files[0].href == "bitstream_119"


@pytest.mark.samples
def test_item_premis(item_8):
    premis = item_8.bundles[0].files[0].admin.premis
    assert premis.digest == "499b0e1e3936582ca4981163db5442b9"
    assert premis.digest_algorithm == "MD5"
    assert premis.size == 10201
    assert premis.original_name == "test_word.docx"
    assert premis.format_name == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.mark.samples
def test_item_bitstream_techmd(item_8):
    techmd = item_8.bundles[0].files[1].admin.techmd_dim
    fields = {(value.element, value.qualifier): value.value for value in techmd}
    assert fields[("title", None)] == "test_pdf.pdf"
    assert fields[("format", "medium")] == "Adobe PDF"
    assert fields[("format", "internal")] == "false"


@pytest.mark.samples
def test_item_dim_values(item_8):
    assert [section.md_type for section in item_8.descriptive] == ["MODS", "DIM"]
    dim = item_8.descriptive[1].dim
    assert len(dim) == 15
    assert dim[0] == DimValue("dc", "creator", None, "Donohue, Timothy G", "en_US")
    abstract = next(value for value in dim if value.qualifier == "abstract")
    assert abstract.value == (
        "This is really just a sample abstract.  But, Í’vé thrown ïn a cõuple of spëciâl charactèrs för êxtrå fuñ!"
    )
    assert [value.value for value in dim if value.element == "subject"] == ["keyword1", "keyword2", "keyword3"]


@pytest.mark.samples
def test_item_mods_kept(item_8):
    mods = item_8.descriptive[0]
    assert mods.dim is None
    assert mods.mods_xml.startswith(b"<mods:mods ")
    assert ns.METS.encode() not in mods.mods_xml
    assert "Test PDF Document" in mods.mods_xml.decode("utf-8")


@pytest.mark.samples
def test_item_deposit_license_href(item_8):
    assert item_8.admin.license_hrefs == {"DSpaceDepositLicense": "bitstream_119"}


@pytest.mark.samples
def test_item_techmd_submitter(item_8):
    techmd = item_8.admin.techmd_dim
    assert DimValue("dc", "creator", None, "curator@example.org") in techmd
    assert DimValue("dc", "relation", "isPartOf", "hdl:123456789/5") in techmd


@pytest.mark.samples
def test_item_policies_everywhere(item_8):
    holders = [item_8.admin, *(bundle.admin for bundle in item_8.bundles)]
    holders += [file.admin for bundle in item_8.bundles for file in bundle.files]
    for admin in holders:
        assert [(policy.action, policy.group_name) for policy in admin.policies] == [(ns.READ, "Anonymous")]
        assert admin.policies[0].context_class == "GENERAL PUBLIC"


@pytest.mark.samples
def test_item_derivative_group_id(samples_dir):
    item = _sample(samples_dir, "ITEM@2429-2696.zip")
    bundles = {bundle.name: bundle for bundle in item.bundles}
    assert set(bundles) == {"ORIGINAL", "LICENSE", "TEXT"}
    assert bundles["TEXT"].files[0].group_id == bundles["ORIGINAL"].files[0].group_id


@pytest.mark.samples
def test_collection_children(collection_1314):
    handles = ["1521", "2696", "2697", "2698", "2699", "2700", "2701", "2702", "2703"]
    assert [child.object_type for child in collection_1314.children] == ["ITEM"] * 9
    assert [child.handle for child in collection_1314.children] == [f"2429/{number}" for number in handles]
    assert [child.href for child in collection_1314.children] == [f"ITEM@2429-{number}.zip" for number in handles]


@pytest.mark.samples
def test_collection_identity(collection_1314):
    assert collection_1314.object_type == "COLLECTION"
    assert collection_1314.handle == "2429/1314"
    assert collection_1314.parent_handle == "2429/1076"
    assert collection_1314.last_modified is None
    assert collection_1314.bundles == []
    assert collection_1314.logo is None


@pytest.mark.samples
def test_collection_template(collection_1314):
    template = collection_1314.template_descriptive
    assert [section.md_type for section in template] == ["DIM", "MODS"]
    assert template[0].dim == [
        DimValue("dc", "publisher", None,
                 "Office of the Vice President Research, The University of British Columbia", "en"),
        DimValue("dc", "relation", "ispartofseries",
                 "frontier: a journal of research and discovery, issue 1, May 2006", "en"),
    ]


@pytest.mark.samples
def test_collection_empty_dim_fields(collection_1314):
    dim = next(section for section in collection_1314.descriptive if section.md_type == "DIM").dim
    assert len(dim) == 8
    assert DimValue("dc", "provenance", None, "") in dim
    assert DimValue("dc", "title", None, "frontier, issue 1, May 2006") in dim


@pytest.mark.samples
def test_collection_groups(collection_1314):
    groups = collection_1314.admin.roles.groups
    assert [group.type for group in groups] == ["ADMIN", "SUBMIT", "WORKFLOW_STEP_2"]
    assert groups[0].name == "COLLECTION_hdl:2429/1314_ADMIN"
    for group in groups:
        assert group.member_emails == ["submitter@example.org", "reviewer@example.org"]
        assert group.member_group_names == []
    assert collection_1314.admin.roles.people == []


@pytest.mark.samples
def test_collection_policies(collection_1314):
    policies = collection_1314.admin.policies
    assert [policy.action for policy in policies] == [0, 10, 9, 3, 3, 11]
    assert [policy.group_name for policy in policies] == [
        "Anonymous",
        "Anonymous",
        "Anonymous",
        "COLLECTION_hdl:2429/1314_SUBMIT",
        "COLLECTION_hdl:2429/1314_WORKFLOW_STEP_2",
        "COLLECTION_hdl:2429/1314_ADMIN",
    ]
    assert all(policy.eperson_email is None for policy in policies)


@pytest.mark.samples
def test_collection_text_with_carriage_return(samples_dir):
    collection = _sample(samples_dir, "COLLECTION@123456789-2.zip")
    dim = next(section for section in collection.descriptive if section.md_type == "DIM").dim
    license_text = next(value.value for value in dim if value.qualifier == "license")
    assert license_text.startswith("This collection has a license<p>after p tag\r\n")
    assert [child.handle for child in collection.children] == ["123456789/459", "123456789/3", "123456789/4"]


@pytest.mark.samples
def test_community_children(samples_dir):
    community = _sample(samples_dir, "COMMUNITY@123456789-1.zip")
    assert [child.object_type for child in community.children] == ["COMMUNITY"] + ["COLLECTION"] * 4
    assert community.children[1].href == "COLLECTION@123456789-2.zip"
    assert community.parent_handle == "123456789/0"


@pytest.mark.samples
def test_site_groups(site):
    groups = {group.name: group for group in site.admin.roles.groups}
    assert len(site.admin.roles.groups) == 15
    assert groups["Administrator"].member_emails == ["curator@example.org", "blah@blah.org"]
    assert groups["Anonymous"].member_emails == []
    assert groups["COLLECTION_hdl:123456789/57_DEFAULT_READ"].member_group_names == ["Anonymous"]
    assert groups["COLLECTION_hdl:123456789/57_WORKFLOW_STEP_1"].member_group_names == ["Administrator"]


@pytest.mark.samples
def test_site_people(site):
    people = site.admin.roles.people
    assert [person.email for person in people] == ["blah@blah.org", "curator@example.org"]
    curator = people[1]
    assert (curator.id, curator.first_name, curator.last_name, curator.language) == ("2", "Alex", "Curator", "en")
    assert curator.can_log_in is True
    assert curator.self_registered is False
    assert curator.password_hash is None


@pytest.mark.samples
def test_site_children(site):
    assert [child.handle for child in site.children] == [
        "123456789/6696", "123456789/117", "123456789/1", "123456789/6699",
    ]
    assert {child.object_type for child in site.children} == {"COMMUNITY"}
    assert site.parent_handle is None
    assert site.admin.policies is None


# --- hand-written manifests ---------------------------------------------------------------

_NAMESPACES = (
    f'xmlns="{ns.METS}" xmlns:xlink="{ns.XLINK}" xmlns:dim="{ns.DIM}" '
    f'xmlns:mods="{ns.MODS}" xmlns:premis="{ns.PREMIS}" xmlns:rights="{ns.METSRIGHTS}"'
)

_DIM_SECTION = """
 <dmdSec ID="dmd_1"><mdWrap MDTYPE="OTHER" OTHERMDTYPE="DIM"><xmlData>
  <dim:dim dspaceType="ITEM"><dim:field mdschema="dc" element="title">A title</dim:field></dim:dim>
 </xmlData></mdWrap></dmdSec>
"""


def _manifest_xml(
    body: str = "",
    *,
    div: str = '<div ID="div_1" DMDID="dmd_1"/>',
    dmd: str = _DIM_SECTION,
    object_type: str = "DSpace ITEM",
    profile: str = ns.PROFILE,
    mets_id: str = "DSpace_ITEM_123456789-8",
) -> bytes:
    """Build a minimal manifest: one DIM dmdSec, ``body`` sections and a structMap with ``div``."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<mets {_NAMESPACES} ID="{mets_id}" OBJID="hdl:123456789/8" TYPE="{object_type}" PROFILE="{profile}">
 {dmd}
 {body}
 <structMap LABEL="DSpace Object" TYPE="LOGICAL">{div}</structMap>
</mets>""".encode()


def _read(data: bytes) -> PackageManifest:
    return read_manifest(data, source="test.zip")


def _amd(section: str, amd_id: str = "amd_1") -> str:
    return f'<amdSec ID="{amd_id}">{section}</amdSec>'


def _rights(contexts: str, md_type: str = 'MDTYPE="OTHER" OTHERMDTYPE="METSRIGHTS"') -> str:
    return (
        f'<rightsMD ID="rights_1"><mdWrap {md_type}><xmlData>'
        f'<rights:RightsDeclarationMD RIGHTSCATEGORY="LICENSED">{contexts}</rights:RightsDeclarationMD>'
        "</xmlData></mdWrap></rightsMD>"
    )


def _object_policies(contexts: str, md_type: str = 'MDTYPE="OTHER" OTHERMDTYPE="METSRIGHTS"'):
    data = _manifest_xml(_amd(_rights(contexts, md_type)), div='<div DMDID="dmd_1" ADMID="amd_1"/>')
    return _read(data).admin.policies


def _file_section(file_attributes: str = 'ID="bitstream_1"', content: str = "", use: str = "ORIGINAL") -> str:
    content = content or '<FLocat LOCTYPE="URL" xlink:href="bitstream_1.pdf"/>'
    return f'<fileSec><fileGrp USE="{use}"><file {file_attributes}>{content}</file></fileGrp></fileSec>'


def test_minimal_manifest_read():
    manifest = _read(_manifest_xml())
    assert manifest.object_type == "ITEM"
    assert manifest.handle == "123456789/8"
    assert manifest.descriptive == [DescriptiveMetadata("DIM", dim=[DimValue("dc", "title", None, "A title")])]
    assert manifest.admin.policies is None
    assert manifest.template_descriptive is None


def test_profile_wrong_rejected():
    wrong = "http://www.dspace.org/schema/aip/1.0/mets.xsd"
    with pytest.raises(InvalidPackageError, match="test.zip") as raised:
        _read(_manifest_xml(profile=wrong))
    assert wrong in str(raised.value)


def test_root_not_mets_rejected():
    with pytest.raises(InvalidPackageError, match="root element"):
        _read(b'<mets PROFILE="x"/>')


def test_type_unknown_rejected():
    with pytest.raises(InvalidPackageError, match="DSpace BUNDLE"):
        _read(_manifest_xml(object_type="DSpace BUNDLE"))


def test_type_case_insensitive():
    assert _read(_manifest_xml(object_type="dspace collection")).object_type == "COLLECTION"


def test_doctype_rejected():
    data = b'<?xml version="1.0"?><!DOCTYPE mets SYSTEM "mets.dtd">' + _manifest_xml().split(b"?>", 1)[1]
    with pytest.raises(UnsafePackageError, match="test.zip.*DOCTYPE"):
        _read(data)


def test_external_entity_rejected():
    data = b'<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]><x>&secret;</x>'
    with pytest.raises(UnsafePackageError, match="DOCTYPE"):
        xmlsafe.parse_xml(data, source="test.zip")


def test_entity_expansion_rejected():
    data = (
        b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><x>&c;</x>'
    )
    with pytest.raises(UnsafePackageError):
        xmlsafe.parse_xml(data, source="test.zip")


def test_malformed_xml_invalid():
    with pytest.raises(InvalidPackageError, match="test.zip.*not well-formed") as raised:
        xmlsafe.parse_xml(b"<mets><dmdSec></mets>", source="test.zip")
    assert not isinstance(raised.value, UnsafePackageError)


def test_undefined_entity_invalid():
    with pytest.raises(InvalidPackageError, match="not well-formed"):
        xmlsafe.parse_xml(b"<x>&undefined;</x>", source="test.zip")


def test_deep_nesting_rejected():
    data = b"<a>" * 300 + b"</a>" * 300
    with pytest.raises(UnsafePackageError, match="test.zip"):
        xmlsafe.parse_xml(data, source="test.zip")


def test_depth_limit_checked_after_parse(monkeypatch):
    monkeypatch.setattr(xmlsafe, "MAX_DEPTH", 5)
    xmlsafe.parse_xml(b"<a>" * 5 + b"</a>" * 5, source="test.zip")
    with pytest.raises(UnsafePackageError, match="deeper than 5"):
        xmlsafe.parse_xml(b"<a>" * 6 + b"</a>" * 6, source="test.zip")


def test_missing_admid_rejected():
    with pytest.raises(InvalidPackageError, match="ADMID references ID 'amd_9'"):
        _read(_manifest_xml(div='<div DMDID="dmd_1" ADMID="amd_9"/>'))


def test_missing_dmdid_rejected():
    with pytest.raises(InvalidPackageError, match="DMDID references ID 'dmd_2'"):
        _read(_manifest_xml(div='<div DMDID="dmd_1 dmd_2"/>'))


def test_missing_fileid_rejected():
    with pytest.raises(InvalidPackageError, match="FILEID references ID 'bitstream_9'"):
        _read(_manifest_xml(div='<div DMDID="dmd_1"><fptr FILEID="bitstream_9"/></div>'))


def test_dmdid_to_amdsec_rejected():
    data = _manifest_xml(_amd(""), div='<div DMDID="amd_1"/>')
    with pytest.raises(InvalidPackageError, match="DMDID must reference dmdSec elements, but 'amd_1' is the ID"):
        _read(data)


def test_duplicate_id_rejected():
    with pytest.raises(InvalidPackageError, match="'dmd_1' is used by more than one"):
        _read(_manifest_xml(_DIM_SECTION))


def test_fcontent_rejected():
    section = _file_section(content="<FContent><binData>AAAA</binData></FContent>")
    with pytest.raises(InvalidPackageError, match="file 'bitstream_1'.*FContent"):
        _read(_manifest_xml(section))


def test_flocat_missing_rejected():
    section = _file_section(content="<!-- no location -->")
    with pytest.raises(InvalidPackageError, match="file 'bitstream_1' has no FLocat"):
        _read(_manifest_xml(section))


def test_flocat_not_url_rejected():
    section = _file_section(content='<FLocat LOCTYPE="HANDLE" xlink:href="123456789/8"/>')
    with pytest.raises(InvalidPackageError, match="LOCTYPE 'URL'"):
        _read(_manifest_xml(section))


def test_file_size_not_integer_rejected():
    section = _file_section('ID="bitstream_1" SIZE="12kB"')
    with pytest.raises(InvalidPackageError, match="test.zip: file 'bitstream_1' SIZE '12kB' is not"):
        _read(_manifest_xml(section))


def test_file_seq_not_integer_rejected():
    section = _file_section('ID="bitstream_1" SEQ="1_000"')
    with pytest.raises(InvalidPackageError, match="SEQ '1_000'"):
        _read(_manifest_xml(section))


def test_file_group_without_use_rejected():
    section = _file_section(use="").replace(' USE=""', ' ID="grp_1"')
    with pytest.raises(InvalidPackageError, match="fileGrp 'grp_1' has no USE"):
        _read(_manifest_xml(section))


def test_file_group_alias_renamed():
    manifest = _read(_manifest_xml(_file_section(use="CONTENT")))
    assert [bundle.name for bundle in manifest.bundles] == ["ORIGINAL"]


def test_primary_file_of_item():
    div = '<div DMDID="dmd_1"><fptr FILEID="bitstream_1"/></div>'
    manifest = _read(_manifest_xml(_file_section(), div=div))
    assert manifest.primary_file_id == "bitstream_1"
    assert manifest.bundles[0].files[0].href == "bitstream_1.pdf"


def test_logo_of_container():
    section = _file_section('ID="logo_1" MIMETYPE="image/png" SIZE="3"', use="LOGO")
    div = '<div DMDID="dmd_1"><fptr FILEID="logo_1"/></div>'
    manifest = _read(_manifest_xml(section, div=div, object_type="DSpace COMMUNITY"))
    assert manifest.logo.id == "logo_1"
    assert manifest.logo.size == 3
    assert manifest.bundles == []
    assert manifest.primary_file_id is None


def test_last_modified_with_zone():
    header = '<metsHdr LASTMODDATE="2010-09-24T12:16:56.250+02:00"/>'
    manifest = _read(_manifest_xml().replace(b"<dmdSec", header.encode() + b"<dmdSec", 1))
    assert manifest.last_modified == datetime(2010, 9, 24, 10, 16, 56, 250000, tzinfo=timezone.utc)


def test_last_modified_bad_rejected():
    header = '<metsHdr LASTMODDATE="24/09/2010"/>'
    with pytest.raises(InvalidPackageError, match="LASTMODDATE '24/09/2010'"):
        _read(_manifest_xml().replace(b"<dmdSec", header.encode() + b"<dmdSec", 1))


def test_uuid_from_db_id():
    item_uuid = "0b6c3a4e-5f1d-4c7e-9a2b-1c2d3e4f5a6b"
    manifest = _read(_manifest_xml(mets_id=f"DSpace_ITEM_DB-ID-{item_uuid.upper()}"))
    assert manifest.uuid == item_uuid


def test_uuid_invalid_ignored():
    assert _read(_manifest_xml(mets_id="DSpace_ITEM_DB-ID-42")).uuid is None


def test_uuid_absent_for_handle_id():
    assert _read(_manifest_xml(mets_id="DSpace_ITEM_123456789-8")).uuid is None


def test_parent_label_case_insensitive():
    parent = (
        '<structMap LABEL="PARENT"><div><mptr LOCTYPE="HANDLE" xlink:href="123456789/5"/></div></structMap>'
    )
    manifest = _read(_manifest_xml().replace(b"</mets>", parent.encode() + b"</mets>"))
    assert manifest.parent_handle == "123456789/5"


def test_children_and_template():
    div = """<div DMDID="dmd_1">
      <div TYPE="DSpace ITEM Template" DMDID="dmd_1"/>
      <div TYPE="DSpace COLLECTION"><mptr LOCTYPE="URL" xlink:href="COLLECTION@1-2.zip"/></div>
    </div>"""
    manifest = _read(_manifest_xml(div=div, object_type="DSpace COMMUNITY"))
    assert [(child.object_type, child.href, child.handle) for child in manifest.children] == [
        ("COLLECTION", "COLLECTION@1-2.zip", None),
    ]
    assert [section.md_type for section in manifest.template_descriptive] == ["DIM"]


def test_dim_attributes():
    dmd = """<dmdSec ID="dmd_1"><mdWrap MDTYPE="OTHER" OTHERMDTYPE="dim"><xmlData><dim:dim>
      <dim:field mdschema="dc" element="contributor" qualifier="author" lang="en"
                 authority="orcid:1" confidence="accepted">Doe, Jane</dim:field>
      <dim:field mdschema="dc" element="subject" qualifier="" authority="lcsh:2">Maps</dim:field>
      <dim:field mdschema="dc" element="type" confidence="BOGUS">Map</dim:field>
    </dim:dim></xmlData></mdWrap></dmdSec>"""
    assert _read(_manifest_xml(dmd=dmd)).descriptive[0].dim == [
        DimValue("dc", "contributor", "author", "Doe, Jane", "en", "orcid:1", 600),
        DimValue("dc", "subject", None, "Maps", None, "lcsh:2", -1),
        DimValue("dc", "type", None, "Map", None, None, 0),
    ]


def test_dmdsec_group_id_kept():
    dmd = _DIM_SECTION.replace('ID="dmd_1"', 'ID="dmd_1" GROUPID="group_a"')
    assert _read(_manifest_xml(dmd=dmd)).descriptive[0].group_id == "group_a"


# --- METSRights -----------------------------------------------------------------------------


def test_policy_managed_group():
    policies = _object_policies(
        '<rights:Context CONTEXTCLASS="MANAGED GRP"><rights:UserName USERTYPE="GROUP">Editors</rights:UserName>'
        '<rights:Permissions DISCOVER="true" DISPLAY="true" MODIFY="true" DELETE="true"/></rights:Context>'
    )
    assert [(policy.action, policy.context_class, policy.group_name) for policy in policies] == [
        (ns.DELETE, "MANAGED GRP", "Editors"),
    ]


def test_policy_academic_user():
    policies = _object_policies(
        '<rights:Context CONTEXTCLASS="ACADEMIC USER">'
        '<rights:UserName USERTYPE="INDIVIDUAL">reader@example.org</rights:UserName>'
        '<rights:Permissions DISCOVER="true" DISPLAY="true" MODIFY="true" DELETE="false"/></rights:Context>'
    )
    assert policies[0].eperson_email == "reader@example.org"
    assert policies[0].group_name is None
    assert policies[0].action == ns.WRITE


def test_policy_repository_manager():
    policies = _object_policies(
        '<rights:Context CONTEXTCLASS="REPOSITORY MGR">'
        '<rights:Permissions OTHER="true" OTHERPERMITTYPE="REMOVE CONTENTS"/></rights:Context>'
    )
    assert (policies[0].group_name, policies[0].action) == ("Administrator", ns.REMOVE)


def test_policy_withdrawn_read():
    policies = _object_policies(
        '<rights:Context CONTEXTCLASS="GENERAL PUBLIC">'
        '<rights:Permissions DISCOVER="true" DISPLAY="true" OTHER="true" OTHERPERMITTYPE="WITHDRAWN READ"/>'
        "</rights:Context>"
    )
    assert policies[0].action == ns.WITHDRAWN_READ


def test_policy_unknown_action_none():
    policies = _object_policies(
        '<rights:Context CONTEXTCLASS="GENERAL PUBLIC"><rights:Permissions/></rights:Context>'
        '<rights:Context CONTEXTCLASS="GENERAL PUBLIC">'
        '<rights:Permissions DISCOVER="true" DISPLAY="true" OTHER="true" OTHERPERMITTYPE="WORKFLOW"/>'
        "</rights:Context>"
    )
    assert [policy.action for policy in policies] == [None, None]


def test_policy_name_description_dates():
    policies = _object_policies(
        '<rights:Context rpName="embargo" in-effect="false" '
        'start-date="2030-01-01" end-date="2031-06-30T00:00:00" CONTEXTCLASS="GENERAL PUBLIC">'
        '<rights:Permissions DISCOVER="true" DISPLAY="true" MODIFY="false" DELETE="false"/>'
        '<rights:Constraints CONSTRAINTTYPE="OTHER" OTHERCONSTRAINTTYPE="DSpace policy description">'
        "<rights:ConstraintDescription>until publication</rights:ConstraintDescription>"
        "</rights:Constraints></rights:Context>"
    )
    policy = policies[0]
    assert (policy.name, policy.description) == ("embargo", "until publication")
    assert (policy.start_date, policy.end_date) == (date(2030, 1, 1), date(2031, 6, 30))


def test_policy_bad_date_rejected():
    with pytest.raises(InvalidPackageError, match="start-date '2030-13-01'"):
        _object_policies('<rights:Context start-date="2030-13-01" CONTEXTCLASS="GENERAL PUBLIC"/>')


def test_policy_group_without_user_name_rejected():
    with pytest.raises(InvalidPackageError, match="no rights:UserName with USERTYPE 'GROUP'"):
        _object_policies('<rights:Context CONTEXTCLASS="MANAGED GRP"/>')


def test_policy_mdtype_metsrights():
    policies = _object_policies('<rights:Context CONTEXTCLASS="GENERAL PUBLIC"/>', md_type='MDTYPE="METSRIGHTS"')
    assert [policy.group_name for policy in policies] == ["Anonymous"]


def test_policy_empty_declaration():
    assert _object_policies("") == []


# --- PREMIS ---------------------------------------------------------------------------------


def test_premis_digest_lowercased():
    premis = """<techMD ID="tech_1"><mdWrap MDTYPE="PREMIS"><xmlData><premis:premis><premis:object>
      <premis:objectCharacteristics>
        <premis:fixity><premis:messageDigestAlgorithm>SHA-1</premis:messageDigestAlgorithm>
          <premis:messageDigest>AA</premis:messageDigest></premis:fixity>
        <premis:fixity><premis:messageDigestAlgorithm>MD5</premis:messageDigestAlgorithm>
          <premis:messageDigest>9B5D0D3F</premis:messageDigest></premis:fixity>
        <premis:size>42</premis:size>
      </premis:objectCharacteristics>
      <premis:originalName>a.pdf</premis:originalName>
    </premis:object></premis:premis></xmlData></mdWrap></techMD>"""
    data = _manifest_xml(_amd(premis), div='<div DMDID="dmd_1" ADMID="amd_1"/>')
    record = _read(data).admin.premis
    assert (record.digest_algorithm, record.digest) == ("MD5", "9b5d0d3f")
    assert (record.size, record.original_name, record.format_name) == (42, "a.pdf", None)


def test_premis_bad_size_rejected():
    premis = """<techMD ID="tech_1"><mdWrap MDTYPE="PREMIS"><xmlData><premis:premis><premis:object>
      <premis:objectCharacteristics><premis:size>large</premis:size></premis:objectCharacteristics>
    </premis:object></premis:premis></xmlData></mdWrap></techMD>"""
    data = _manifest_xml(_amd(premis), div='<div DMDID="dmd_1" ADMID="amd_1"/>')
    with pytest.raises(InvalidPackageError, match="premis:size 'large'"):
        _read(data)


# --- DSPACE-ROLES ---------------------------------------------------------------------------

_ROLES_BODY = """<{p}DSpaceRoles{declaration}>
  <{p}Groups><{p}Group ID="3" Name="Editors" Type="ADMIN">
    <{p}Members><{p}Member ID="7" Name="editor@example.org"/></{p}Members>
    <{p}MemberGroups><{p}MemberGroup ID="1" Name="Administrator"/></{p}MemberGroups>
  </{p}Group></{p}Groups>
  <{p}People><{p}Person ID="7">
    <{p}Email>editor@example.org</{p}Email><{p}Netid>ed</{p}Netid>
    <{p}PasswordHash digest="SHA-512" salt="00ff">abcdef</{p}PasswordHash>
    <{p}CanLogin/><{p}SelfRegistered/>
  </{p}Person></{p}People>
</{p}DSpaceRoles>"""


def _roles_manifest(roles_xml: str) -> PackageManifest:
    section = (
        '<techMD ID="tech_1"><mdWrap MDTYPE="OTHER" OTHERMDTYPE="dspace-roles">'
        f"<xmlData>{roles_xml}</xmlData></mdWrap></techMD>"
    )
    data = _manifest_xml(_amd(section), div='<div DMDID="dmd_1" ADMID="amd_1"/>', object_type="DSpace SITE")
    return _read(data)


@pytest.mark.parametrize(
    "roles_xml",
    [
        _ROLES_BODY.format(p="", declaration=' xmlns=""'),
        _ROLES_BODY.format(p="dsroles:", declaration=f' xmlns:dsroles="{ns.DSROLES}"'),
        _ROLES_BODY.format(p="", declaration=""),
    ],
    ids=["bare", "dsroles-namespace", "mets-namespace"],
)
def test_roles_any_namespace(roles_xml):
    roles = _roles_manifest(roles_xml).admin.roles
    group = roles.groups[0]
    assert (group.name, group.id, group.type) == ("Editors", "3", "ADMIN")
    assert group.member_emails == ["editor@example.org"]
    assert group.member_group_names == ["Administrator"]
    person = roles.people[0]
    assert (person.email, person.netid) == ("editor@example.org", "ed")
    assert (person.password_hash, person.password_digest_algorithm, person.password_salt) == (
        "abcdef", "SHA-512", "00ff",
    )
    assert (person.can_log_in, person.require_certificate, person.self_registered) == (True, False, True)


def test_roles_group_without_name_rejected():
    with pytest.raises(InvalidPackageError, match="Group with ID '3' has no Name"):
        _roles_manifest('<DSpaceRoles xmlns=""><Groups><Group ID="3"/></Groups></DSpaceRoles>')


# --- MODS fallback and choose_descriptive ---------------------------------------------------

_MODS = f"""<mods:mods xmlns:mods="{ns.MODS}">
  <mods:titleInfo><mods:title>Volcanoes</mods:title></mods:titleInfo>
  <mods:name><mods:role><mods:roleTerm type="text">author</mods:roleTerm></mods:role>
    <mods:namePart>Doe, Jane</mods:namePart></mods:name>
  <mods:name><mods:namePart>Roe, Richard</mods:namePart></mods:name>
  <mods:abstract>About volcanoes.</mods:abstract>
  <mods:abstract/>
  <mods:originInfo><mods:dateIssued encoding="iso8601">2006-05</mods:dateIssued>
    <mods:publisher>UBC</mods:publisher></mods:originInfo>
  <mods:identifier type="uri">http://hdl.handle.net/2429/2696</mods:identifier>
  <mods:subject><mods:topic>Geology</mods:topic></mods:subject>
  <mods:note>Reprint.</mods:note>
  <mods:genre>Article</mods:genre>
  <mods:language><mods:languageTerm>en</mods:languageTerm></mods:language>
  <mods:accessCondition type="useAndReproduction">CC BY</mods:accessCondition>
  <mods:physicalDescription><mods:extent>12 p.</mods:extent></mods:physicalDescription>
</mods:mods>""".encode()


def test_mods_to_dim_mapping():
    fields = [(value.element, value.qualifier, value.value) for value in mods_to_dim(_MODS)]
    assert fields == [
        ("title", None, "Volcanoes"),
        ("contributor", "author", "Doe, Jane"),
        ("creator", None, "Roe, Richard"),
        ("description", "abstract", "About volcanoes."),
        ("date", "issued", "2006-05"),
        ("publisher", None, "UBC"),
        ("identifier", "uri", "http://hdl.handle.net/2429/2696"),
        ("subject", None, "Geology"),
        ("description", None, "Reprint."),
        ("type", None, "Article"),
        ("language", "iso", "en"),
        ("rights", None, "CC BY"),
    ]
    assert all(value.schema == "dc" for value in mods_to_dim(_MODS))


def test_mods_section_read():
    dmd = (
        f'<dmdSec ID="dmd_1"><mdWrap MDTYPE="MODS"><xmlData>{_MODS.decode()}</xmlData></mdWrap></dmdSec>'
    )
    section = _read(_manifest_xml(dmd=dmd)).descriptive[0]
    assert (section.md_type, section.dim) == ("MODS", None)
    assert mods_to_dim(section.mods_xml)[0] == DimValue("dc", "title", None, "Volcanoes")


def _sections(*specs: tuple[str, str | None]) -> list[DescriptiveMetadata]:
    return [DescriptiveMetadata(md_type, group_id=group_id) for md_type, group_id in specs]


def test_choose_descriptive_preferred():
    sections = _sections(("DIM", None), ("MODS", None))
    assert choose_descriptive(sections, "mods") == [sections[1]]


def test_choose_descriptive_dim_default():
    sections = _sections(("MODS", None), ("DIM", None))
    assert choose_descriptive(sections, None) == [sections[1]]
    assert choose_descriptive(sections, "QDC") == [sections[1]]


def test_choose_descriptive_mods_then_first():
    assert choose_descriptive(_sections(("QDC", None), ("MODS", None)), None)[0].md_type == "MODS"
    assert choose_descriptive(_sections(("QDC", None), ("MARC", None)), None)[0].md_type == "QDC"


def test_choose_descriptive_group_siblings():
    sections = _sections(("MODS", "g1"), ("EXTRA", "g2"), ("DIM", "g2"), ("OTHER", "g2"))
    assert choose_descriptive(sections, None) == sections[1:]


def test_choose_descriptive_empty_rejected():
    with pytest.raises(InvalidPackageError, match="test.zip: the object has no descriptive metadata"):
        choose_descriptive([], "DIM", source="test.zip")
