"""``packager --verify``: checks packages and whole exported trees without writing anything.

The tampered packages are copies of exported ones, rewritten with one change
each. Every failing run must raise one ``CommandError``, print a PROBLEM line for
each fault that names the package and the file or element, and leave the
database and the bitstream folder as they were.
"""
from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Q, Sum

from aip.package import MANIFEST_NAME
from repository.models import Bitstream, Collection, Community, Item
from tests.aip.conftest import database_snapshot, export_site, packager, repository_wipe, stored_files

SITE_PACKAGE = "SITE@123456789-0.zip"
PROFILE = "http://www.dspace.org/schema/aip/mets_aip_1_0.xsd"
ZIP_LOCAL_HEADER_SIZE = 30


# --- helpers ------------------------------------------------------------------------------


@dataclass
class Run:
    """Output of one ``packager --verify`` run, and its error message if it failed."""

    output: str
    errors: str
    failure: str | None

    def problems(self) -> list[str]:
        return [line.removeprefix("PROBLEM: ") for line in self.errors.splitlines() if line.startswith("PROBLEM: ")]

    def warnings(self) -> list[str]:
        return [line.removeprefix("WARNING: ") for line in self.errors.splitlines() if line.startswith("WARNING: ")]


def verify(capsys, *arguments: str) -> Run:
    """Run ``packager --verify`` as the test administrator and return what it printed."""
    capsys.readouterr()
    failure = None
    try:
        packager("--verify", *arguments)
    except CommandError as error:
        failure = str(error)
    captured = capsys.readouterr()
    return Run(output=captured.out, errors=captured.err, failure=failure)


@dataclass
class Before:
    """Row counts and stored file names taken before a run that must write nothing."""

    database: dict[str, int]
    files: list[str]


def before(root: Path) -> Before:
    return Before(database=database_snapshot(), files=stored_files(root))


def assert_unchanged(state: Before, root: Path) -> None:
    assert database_snapshot() == state.database
    assert stored_files(root) == state.files


def package_rewrite(
    path: Path,
    *,
    mets: Callable[[str], str] | None = None,
    entries: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
    extra: dict[str, bytes] | None = None,
    compress_type: int = zipfile.ZIP_DEFLATED,
) -> None:
    """Rewrite a package in place with the same entry names, applying the given changes.

    ``mets`` rewrites the mets.xml text, ``entries`` replaces entry contents,
    ``drop`` leaves entries out and ``extra`` adds entries at the end.
    """
    with zipfile.ZipFile(path) as archive:
        contents = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compress_type) as archive:
        for name, data in contents:
            if name in drop:
                continue
            if name == MANIFEST_NAME and mets is not None:
                data = mets(data.decode("utf-8")).encode("utf-8")
            if entries and name in entries:
                data = entries[name]
            archive.writestr(name, data)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)


def replace_once(text: str, old: str, new: str) -> str:
    """Replace the first ``old`` in ``text``, failing the test when the manifest does not contain it."""
    assert old in text, f"the manifest does not contain {old!r}"
    return text.replace(old, new, 1)


def entry_bytes(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def pdf_entry(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return next(name for name in archive.namelist() if name.endswith(".pdf"))


def stored_entry_corrupt(path: Path, name: str) -> None:
    """Flip one byte inside the data of a stored (uncompressed) entry, so that only its CRC-32 shows the damage."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    assert info.compress_type == zipfile.ZIP_STORED
    with path.open("r+b") as raw:
        raw.seek(info.header_offset)
        header = raw.read(ZIP_LOCAL_HEADER_SIZE)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        position = info.header_offset + ZIP_LOCAL_HEADER_SIZE + name_length + extra_length + info.file_size // 2
        raw.seek(position)
        byte = raw.read(1)
        raw.seek(position)
        raw.write(bytes([byte[0] ^ 0xFF]))


def package_name(obj) -> str:
    return f"{obj.object_type}@{obj.handle_string.replace('/', '-')}.zip"


def unmapped_item() -> Item:
    return (
        Item.objects.filter(handle__isnull=False, mapped_collections__isnull=True, withdrawn=False)
        .select_related("handle", "owning_collection__handle")
        .order_by("handle__suffix_number")
        .first()
    )


def exported_items():
    return Item.objects.filter(Q(in_archive=True) | Q(withdrawn=True), handle__isnull=False)


def exported_files():
    """Bitstreams that a whole-site export puts into packages: item files and logos."""
    return Bitstream.objects.filter(
        Q(bundle__item__in=exported_items())
        | Q(pk__in=Community.objects.values("logo"))
        | Q(pk__in=Collection.objects.values("logo"))
    )


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def site_folder(demo, tmp_path) -> Path:
    """A whole-site export of the generated repository, which stays in the database."""
    folder = tmp_path / "export"
    export_site(folder)
    return folder


@pytest.fixture
def item_path(site_folder) -> Path:
    """The package of an item that only its owning collection lists."""
    return site_folder / package_name(unmapped_item())


@pytest.fixture
def collection_path(site_folder) -> Path:
    return site_folder / package_name(unmapped_item().owning_collection)


@pytest.fixture
def schema_settings(settings, schema_dir) -> Path:
    settings.AIP_SCHEMA_DIR = str(schema_dir)
    return schema_dir


# --- a clean export -----------------------------------------------------------------------


def test_verify_clean_site_export(site_folder, bitstream_storage, capsys):
    state = before(bitstream_storage)
    packages = 1 + Community.objects.count() + Collection.objects.count() + exported_items().count()
    files = exported_files()

    run = verify(capsys, "-a", str(site_folder / SITE_PACKAGE))

    assert run.failure is None
    assert run.problems() == []
    assert run.warnings() == []
    assert f"Verified {packages} package(s), {files.count()} files, " in run.output
    assert f" {files.aggregate(total=Sum('size_bytes'))['total']} bytes checked: " in run.output
    assert "0 problem(s), 0 warning(s)" in run.output
    assert packages == len(list(site_folder.glob("*.zip")))
    assert_unchanged(state, bitstream_storage)


def test_verify_single_package_skips_children(site_folder, capsys):
    run = verify(capsys, str(site_folder / SITE_PACKAGE))

    assert run.failure is None
    assert "Verified 1 package(s), 0 files, 0 bytes checked: 0 problem(s)" in run.output


def test_verify_item_parent_in_repository(item_path, capsys):
    run = verify(capsys, str(item_path))

    assert run.failure is None
    assert "Verified 1 package(s), 4 files, " in run.output


def test_verify_tree_on_empty_repository(site_folder, capsys):
    repository_wipe()

    run = verify(capsys, "-a", str(site_folder / SITE_PACKAGE))

    assert run.failure is None
    assert run.problems() == []


# --- damaged files ------------------------------------------------------------------------


def test_verify_corrupted_file(item_path, site_folder, bitstream_storage, capsys):
    pdf = pdf_entry(item_path)
    data = entry_bytes(item_path, pdf)
    package_rewrite(item_path, entries={pdf: data[:-1] + bytes([data[-1] ^ 0x01])})
    state = before(bitstream_storage)

    run = verify(capsys, "-a", str(site_folder / SITE_PACKAGE))

    problems = run.problems()
    assert len(problems) == 2
    assert problems[0].startswith(f"{item_path.name}: file {pdf} has MD5 ")
    assert "but file element 'bitstream_" in problems[0]
    assert "states CHECKSUM" in problems[0]
    assert problems[1].startswith(f"{item_path.name}: file {pdf} has MD5 ")
    assert "PREMIS messageDigest" in problems[1]
    assert "Verify found 2 problem(s)" in run.failure
    assert_unchanged(state, bitstream_storage)


def test_verify_size_mismatch(item_path, bitstream_storage, capsys):
    pdf = pdf_entry(item_path)
    data = entry_bytes(item_path, pdf)
    package_rewrite(item_path, entries={pdf: data + b"\n"})
    state = before(bitstream_storage)

    run = verify(capsys, str(item_path))

    problems = run.problems()
    assert f"{item_path.name}: file {pdf} has {len(data) + 1} bytes, but file element" in problems[0]
    assert f"states SIZE {len(data)}." in problems[0]
    assert "PREMIS size of file element" in problems[1]
    assert f"is {len(data)}." in problems[1]
    assert len(problems) == 4  # both sizes and both MD5s differ
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_file_missing_from_zip(item_path, bitstream_storage, capsys):
    pdf = pdf_entry(item_path)
    package_rewrite(item_path, drop=(pdf,))
    state = before(bitstream_storage)

    run = verify(capsys, str(item_path))

    assert run.problems() == [f"{item_path.name}: file {pdf} is named in the manifest but missing from the zip."]
    assert "Verified 1 package(s), 3 files, " in run.output
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_unlisted_entry_warns(item_path, bitstream_storage, capsys):
    package_rewrite(item_path, extra={"notes.txt": b"left behind\n"})
    state = before(bitstream_storage)

    run = verify(capsys, str(item_path))

    assert run.failure is None
    assert run.problems() == []
    assert run.warnings() == [
        f"{item_path.name}: zip entry notes.txt is not named in the manifest; a restore ignores it."
    ]
    assert "0 problem(s), 1 warning(s)" in run.output
    assert_unchanged(state, bitstream_storage)


def test_verify_crc_error(item_path, site_folder, bitstream_storage, capsys):
    pdf = pdf_entry(item_path)
    package_rewrite(item_path, compress_type=zipfile.ZIP_STORED)
    stored_entry_corrupt(item_path, pdf)
    state = before(bitstream_storage)

    run = verify(capsys, "-a", str(site_folder / SITE_PACKAGE))

    problems = run.problems()
    assert len(problems) == 1
    assert problems[0].startswith(f"{item_path.name}: file {pdf} cannot be read from the zip (")
    assert "CRC" in problems[0]
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_not_a_zip(item_path, site_folder, bitstream_storage, capsys):
    item_path.write_bytes(b"This is not a zip file.\n")
    state = before(bitstream_storage)

    run = verify(capsys, "-a", str(site_folder / SITE_PACKAGE))

    problems = run.problems()
    assert len(problems) == 1
    assert item_path.name in problems[0]
    assert "is not a readable zip file" in problems[0]
    # The other packages are still read.
    assert f"Verified {len(list(site_folder.glob('*.zip')))} package(s)" in run.output
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_wrong_profile(item_path, bitstream_storage, capsys):
    package_rewrite(item_path, mets=lambda text: replace_once(text, PROFILE, "http://example.org/other.xsd"))
    state = before(bitstream_storage)

    run = verify(capsys, str(item_path))

    problems = run.problems()
    assert len(problems) == 1
    assert problems[0].startswith(f"{item_path.name}: mets PROFILE is 'http://example.org/other.xsd'")
    assert PROFILE in problems[0]
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


# --- child packages and parents -----------------------------------------------------------


def test_verify_missing_child_package(item_path, collection_path, bitstream_storage, capsys):
    item = unmapped_item()
    item_path.unlink()
    state = before(bitstream_storage)

    run = verify(capsys, "-a", str(collection_path))

    assert run.problems() == [
        f"{collection_path.name}: child package {item_path.name} (ITEM {item.handle_string}) "
        f"is missing from {collection_path.parent}."
    ]
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_child_outside_folder(item_path, collection_path, bitstream_storage, capsys):
    href = f'xlink:href="{item_path.name}"'
    package_rewrite(collection_path, mets=lambda text: replace_once(text, href, f'xlink:href="../{item_path.name}"'))
    state = before(bitstream_storage)

    run = verify(capsys, "-a", str(collection_path))

    assert run.problems() == [
        f"Package {collection_path.name} references a child outside its folder: '../{item_path.name}'."
    ]
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_parent_missing(item_path, bitstream_storage, capsys):
    parent = unmapped_item().owning_collection.handle_string
    package_rewrite(
        item_path, mets=lambda text: replace_once(text, f'xlink:href="{parent}"', 'xlink:href="123456789/99999"')
    )
    state = before(bitstream_storage)

    run = verify(capsys, str(item_path))

    assert run.problems() == [
        f"parent 123456789/99999 of package {item_path.name} is neither in this tree nor in the repository."
    ]
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_parent_wrong_type(item_path, bitstream_storage, capsys):
    collection = unmapped_item().owning_collection
    community = collection.community.handle_string
    package_rewrite(
        item_path,
        mets=lambda text: replace_once(text, f'xlink:href="{collection.handle_string}"', f'xlink:href="{community}"'),
    )
    state = before(bitstream_storage)

    run = verify(capsys, str(item_path))

    assert run.problems() == [
        f"{item_path.name}: ITEM packages can only be placed under COLLECTION, "
        f"but parent {community} has type COMMUNITY."
    ]
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


# --- schema validation --------------------------------------------------------------------


def test_verify_validate_valid_export(site_folder, schema_settings, capsys):
    run = verify(capsys, "-a", "-o", "validate=true", str(site_folder / SITE_PACKAGE))

    assert run.failure is None
    assert run.problems() == []


def test_verify_validate_invalid_manifest(item_path, schema_settings, bitstream_storage, capsys):
    package_rewrite(item_path, mets=lambda text: replace_once(text, "<metsHdr", '<metsHdr BOGUS="1"'))
    state = before(bitstream_storage)

    run = verify(capsys, "-o", "validate=true", str(item_path))

    problems = run.problems()
    assert len(problems) == 1
    assert problems[0].startswith(f"{item_path.name}: mets.xml is not valid against the AIP schemas: ")
    assert "BOGUS" in problems[0]
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)


def test_verify_validate_false_skips_schemas(item_path, settings, capsys):
    settings.AIP_SCHEMA_DIR = ""
    package_rewrite(item_path, mets=lambda text: replace_once(text, "<metsHdr", '<metsHdr BOGUS="1"'))

    run = verify(capsys, "-o", "validate=false", str(item_path))

    assert run.failure is None


def test_verify_validate_without_schema_dir(item_path, settings, capsys):
    settings.AIP_SCHEMA_DIR = ""

    run = verify(capsys, "-o", "validate=true", str(item_path))

    problems = run.problems()
    assert len(problems) == 1
    assert "set AIP_SCHEMA_DIR" in problems[0]
    assert "No manifest was validated." in problems[0]
    assert "Verified 1 package(s), 4 files, " in run.output
    assert run.failure is not None


def test_verify_validate_schema_dir_lacks_schema(item_path, settings, tmp_path, capsys):
    empty = tmp_path / "schemas"
    empty.mkdir()
    settings.AIP_SCHEMA_DIR = str(empty)

    run = verify(capsys, "-o", "validate=true", str(item_path))

    problems = run.problems()
    assert len(problems) == 1
    assert f"Schema folder {empty} has no dspace-aip-all.xsd" in problems[0]
    assert run.failure is not None


# --- command line -------------------------------------------------------------------------


def test_verify_rejects_unknown_option(item_path):
    with pytest.raises(CommandError, match="Unknown verify option 'dmd'"):
        packager("--verify", "-o", "dmd=MODS", str(item_path))


def test_verify_rejects_bad_validate_value(item_path):
    with pytest.raises(CommandError, match="validate must be true or false, not 'yes'"):
        packager("--verify", "-o", "validate=yes", str(item_path))


@pytest.mark.parametrize("flag", ["-d", "-s", "-r", "-k", "-f"])
def test_verify_rejects_mode_flags(item_path, flag):
    with pytest.raises(CommandError, match="--verify cannot be combined with -d, -s, -r, -k or -f"):
        packager("--verify", flag, str(item_path))


def test_verify_requires_administrator(item_path):
    with pytest.raises(CommandError, match="is not an administrator"):
        call_command("packager", "-t", "AIP", "-e", "locked.out@example.org", "--verify", str(item_path))


def test_verify_missing_top_package(demo, tmp_path, capsys):
    path = tmp_path / "ITEM@123456789-404.zip"

    run = verify(capsys, str(path))

    assert run.problems() == [f"Package {path} does not exist. Check the file name."]
    assert run.failure is not None


# --- DSpace samples -----------------------------------------------------------------------


@pytest.mark.samples
def test_verify_dspace_collection_sample(admin, samples_dir, bitstream_storage, capsys):
    state = before(bitstream_storage)

    run = verify(capsys, "-a", str(samples_dir / "archivematica-sampledata" / "aip_1314.zip"))

    assert run.problems() == [
        "parent 2429/1076 of package aip_1314.zip is neither in this tree nor in the repository."
    ]
    assert run.warnings() == []
    assert "Verified 10 package(s), 27 files, " in run.output
    assert "1 problem(s)" in run.output
    assert run.failure is not None
    assert_unchanged(state, bitstream_storage)
