"""Hostile and broken packages: each is rejected with a message naming the package and the problem,
and the database and the bitstream storage stay as they were.

Cases already covered by test_ingest_errors.py (a "../" entry name, a duplicate entry,
a changed MD5 or size of an entry, a file missing from the zip, child references with
"../", an absolute path or a subfolder) are not repeated here.
"""
from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from repository.models import Bitstream, Item
from tests.aip import hostile
from tests.aip.conftest import Before, before, database_snapshot, packager, stored_files
from tests.aip.test_ingest_errors import (
    SITE_PACKAGE,
    ItemPackage,
    item_delete,
    item_package_export,
    site_restore,
    unmapped_item,
    walk_order,
)

pytestmark = pytest.mark.django_db

RDF = (
    b'<?xml version="1.0"?>\n<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="http://creativecommons.org/licenses/by/4.0/"/></rdf:RDF>'
)


@pytest.fixture
def lost_item(demo, tmp_path) -> ItemPackage:
    """The package of an item that was then deleted, so a restore of the untouched package succeeds."""
    item = unmapped_item()
    package = item_package_export(item, tmp_path / "packages")
    item_delete(item)
    return package


@pytest.fixture
def wiped_site_folder(demo, tmp_path, bitstream_storage) -> Path:
    from tests.aip.conftest import export_site, repository_wipe

    folder = tmp_path / "export"
    export_site(folder)
    repository_wipe()
    shutil.rmtree(bitstream_storage)
    bitstream_storage.mkdir()
    return folder


def assert_rejected(path: Path, state: Before, root: Path, *expected: str, arguments: tuple[str, ...] = ()) -> str:
    """Restore ``path``, expect a CommandError naming the package and each ``expected`` text, and no writes."""
    with pytest.raises(CommandError) as error:
        packager("-r", *arguments, str(path))

    message = str(error.value)
    assert path.name in message
    for text in expected:
        assert text in message
    assert database_snapshot() == state.database
    assert stored_files(root) == state.files
    return message


def assert_site_rejected(folder: Path, state: Before, root: Path, *expected: str) -> str:
    with pytest.raises(CommandError) as error:
        site_restore(folder)

    message = str(error.value)
    for text in expected:
        assert text in message
    assert database_snapshot() == state.database
    assert stored_files(root) == state.files
    return message


def package_copy(path: Path, label: str) -> Path:
    """Copy a package into a sibling folder named ``label``, keeping its file name, for one case of a table."""
    copy = path.parent.parent / label / path.name
    copy.parent.mkdir()
    shutil.copy2(path, copy)
    return copy


def folder_copy(folder: Path, label: str) -> Path:
    copy = folder.parent / label
    shutil.copytree(folder, copy)
    return copy


def first_package(folder: Path, prefix: str) -> str:
    return next(name for name in walk_order(folder, SITE_PACKAGE) if name.startswith(prefix))


# --- the starting point -------------------------------------------------------------------------


def item_file_count(handle: str) -> int:
    return Bitstream.objects.filter(bundle__item__handle__handle=handle).count()


def test_untouched_package_restores(lost_item, bitstream_storage):
    state = before(bitstream_storage)

    packager("-r", str(lost_item.path))

    assert Item.objects.filter(handle__handle=lost_item.handle).count() == 1
    assert len(stored_files(bitstream_storage)) - len(state.files) == item_file_count(lost_item.handle)


# --- paths that leave the package ---------------------------------------------------------------
# Each table runs its cases on fresh copies of one exported package, because a rejected
# restore leaves the database as it was and building the demo repository is the slow part.


ENTRY_NAMES = ["/etc/evil.txt", "..\\evil.txt", "C:/evil.txt", "sub/../../evil.txt"]


def test_entry_names_outside(lost_item, bitstream_storage):
    state = before(bitstream_storage)
    for index, name in enumerate(ENTRY_NAMES):
        path = package_copy(lost_item.path, f"case-{index}")
        hostile.entry_add(path, name, b"outside")

        assert_rejected(path, state, bitstream_storage, f"has an entry outside the package: {name!r}")


FILE_HREFS = [
    "../secret.pdf", "/etc/passwd", "file:///etc/passwd", "http://127.0.0.1:9/x.pdf", "a/../../x.pdf", "..\\x.pdf"
]


def test_file_hrefs_outside(lost_item, bitstream_storage):
    state = before(bitstream_storage)
    for index, href in enumerate(FILE_HREFS):
        path = package_copy(lost_item.path, f"case-{index}")
        hostile.manifest_edit(path, lambda text: hostile.file_href_set(text, href))

        assert_rejected(path, state, bitstream_storage, f"FLocat references {href!r}, which is outside the package")


def test_licence_mdref_hrefs_outside(lost_item, bitstream_storage):
    state = before(bitstream_storage)
    for index, href in enumerate(["../license.txt", "/etc/passwd", "file:license.txt"]):
        path = package_copy(lost_item.path, f"case-{index}")
        hostile.manifest_edit(path, lambda text: hostile.licence_href_set(text, href))

        assert_rejected(path, state, bitstream_storage, f"mdRef references {href!r}, which is outside the package")


def symlink_in_place_of_file(path: Path) -> str:
    """Replace the first file the manifest lists by a symbolic link of the same name, and return the name."""
    href, _size = hostile.first_file(hostile.manifest_text(path))
    entries = [(info, data) for info, data in hostile.zip_entries(path) if info.filename != href]
    entries.append((hostile.entry_info(href, mode=stat.S_IFLNK | 0o777), b"/etc/passwd"))
    hostile.zip_write(path, entries)
    return href


def device_add(file_type: int):
    return lambda path: hostile.entry_add(path, "device", b"", mode=file_type | 0o644)


SPECIAL_ENTRIES = {
    "symlink": (
        lambda path: hostile.symlink_add(path, "passwd", "/etc/passwd"), "entry 'passwd' that is a symbolic link"
    ),
    "fifo": (device_add(stat.S_IFIFO), "entry 'device' that is a special file (mode 0o10000)"),
    "char-device": (device_add(stat.S_IFCHR), "entry 'device' that is a special file (mode 0o20000)"),
    "block-device": (device_add(stat.S_IFBLK), "entry 'device' that is a special file (mode 0o60000)"),
    "socket": (device_add(stat.S_IFSOCK), "entry 'device' that is a special file (mode 0o140000)"),
    "directory-mode-on-file": (
        lambda path: hostile.entry_add(path, "folder", b"data", mode=stat.S_IFDIR | 0o755),
        "entry 'folder' that is a special file",
    ),
    "bzip2": (
        lambda path: hostile.entry_add(path, "notes.bz2", b"x" * 1000, method=zipfile.ZIP_BZIP2),
        "entry 'notes.bz2' uses zip compression method 12",
    ),
}


def test_special_entries(lost_item, bitstream_storage):
    state = before(bitstream_storage)
    for label, (build, expected) in SPECIAL_ENTRIES.items():
        path = package_copy(lost_item.path, label)
        build(path)

        assert_rejected(path, state, bitstream_storage, expected)


def test_symlink_in_place_of_file(lost_item, bitstream_storage):
    href = symlink_in_place_of_file(lost_item.path)
    state = before(bitstream_storage)

    assert_rejected(lost_item.path, state, bitstream_storage, f"entry {href!r} that is a symbolic link")


# --- XML attacks --------------------------------------------------------------------------------


MANIFEST_ATTACKS = {
    "external-entity": (
        lambda text: hostile.doctype_add(text, hostile.EXTERNAL_ENTITY, body_entity="secret"), "DOCTYPE"
    ),
    "external-dtd": (lambda text: hostile.doctype_add(text, hostile.EXTERNAL_DTD), "DOCTYPE"),
    # libxml2 stops the expansion itself, before the DOCTYPE check runs.
    "billion-laughs": (
        lambda text: hostile.doctype_add(text, hostile.BILLION_LAUGHS, body_entity="lol9"), "exceeds a parser limit"
    ),
    "deep-nesting": (lambda text: hostile.deep_nesting_add(text, 5000), "exceeds a parser limit"),
}


def test_manifest_xml_attacks(lost_item, bitstream_storage):
    state = before(bitstream_storage)
    for label, (edit, expected) in MANIFEST_ATTACKS.items():
        path = package_copy(lost_item.path, label)
        hostile.manifest_edit(path, edit)

        assert_rejected(path, state, bitstream_storage, expected)


RDF_ROOT = '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
REFERENCED_ATTACKS = {
    "external-entity": (
        hostile.EXTERNAL_ENTITY.replace("mets", "rdf:RDF") + RDF_ROOT + "&secret;</rdf:RDF>", "DOCTYPE"
    ),
    "external-dtd": (hostile.EXTERNAL_DTD.replace("mets", "rdf:RDF") + RDF_ROOT + "</rdf:RDF>", "DOCTYPE"),
    "billion-laughs": (
        hostile.BILLION_LAUGHS.replace("mets", "rdf:RDF") + RDF_ROOT + "&lol9;</rdf:RDF>", "exceeds a parser limit"
    ),
    "deep-nesting": (RDF_ROOT + "<deep>" * 5000 + "</deep>" * 5000 + "</rdf:RDF>", "exceeds a parser limit"),
}


def test_referenced_xml_attacks(lost_item, bitstream_storage):
    state = before(bitstream_storage)
    for label, (payload, expected) in REFERENCED_ATTACKS.items():
        path = package_copy(lost_item.path, label)
        hostile.rdf_licence_reference(path, payload.encode("utf-8"))

        assert_rejected(path, state, bitstream_storage, "file license_rdf.xml", expected)


def test_referenced_xml_safe_restores(lost_item, bitstream_storage):
    hostile.rdf_licence_reference(lost_item.path, RDF)

    packager("-r", str(lost_item.path))

    assert Item.objects.filter(handle__handle=lost_item.handle).count() == 1


def test_verify_reports_referenced_xml_attack(lost_item, capsys):
    hostile.rdf_licence_reference(lost_item.path, REFERENCED_ATTACKS["external-entity"][0].encode("utf-8"))

    with pytest.raises(CommandError):
        packager("--verify", str(lost_item.path))

    output = capsys.readouterr()
    assert "file license_rdf.xml" in output.err
    assert "DOCTYPE" in output.err


# --- zip bombs and sizes ------------------------------------------------------------------------


def test_size_limits(lost_item, bitstream_storage, settings):
    total = sum(info.file_size for info, _data in hostile.zip_entries(lost_item.path))
    cases = {
        "entry": (
            {"AIP_MAX_ENTRY_BYTES": 2**20},
            lambda path: hostile.entry_add(path, "bomb.bin", bytes(2**20 + 1)),
            ["entry 'bomb.bin' expands to 1048577 bytes", "AIP_MAX_ENTRY_BYTES"],
        ),
        "package": (
            {"AIP_MAX_PACKAGE_BYTES": total - 1},
            lambda path: None,
            [f"expands to more than {total - 1} bytes", "AIP_MAX_PACKAGE_BYTES"],
        ),
        "manifest": (
            {"AIP_MAX_MANIFEST_BYTES": 1000},
            lambda path: None,
            ["entry 'mets.xml' expands to", "AIP_MAX_MANIFEST_BYTES"],
        ),
        "ratio": (
            {"AIP_COMPRESSION_RATIO_MIN_BYTES": 2**20},
            lambda path: hostile.entry_add(path, "zeros.bin", bytes(2 * 2**20)),
            ["entry 'zeros.bin' expands", " times (", "AIP_MAX_COMPRESSION_RATIO"],
        ),
    }
    state = before(bitstream_storage)
    for label, (limits, build, expected) in cases.items():
        path = package_copy(lost_item.path, label)
        build(path)
        for name, value in limits.items():
            setattr(settings, name, value)

        assert_rejected(path, state, bitstream_storage, *expected)

        for name in limits:
            delattr(settings, name)


def test_size_limits_default_accept(lost_item, bitstream_storage):
    """The entries of the limit cases pass the default limits, so the settings are what reject them."""
    hostile.entry_add(lost_item.path, "zeros.bin", bytes(2 * 2**20))

    packager("-r", str(lost_item.path))

    assert Item.objects.filter(handle__handle=lost_item.handle).count() == 1


def test_invalid_limit_setting(lost_item, bitstream_storage, settings):
    settings.AIP_MAX_ENTRY_BYTES = "lots"
    state = before(bitstream_storage)

    with pytest.raises(CommandError, match="Setting AIP_MAX_ENTRY_BYTES is 'lots'"):
        packager("-r", str(lost_item.path))

    assert database_snapshot() == state.database


def test_entry_expands_beyond_declared_size(lost_item, bitstream_storage):
    """The zip header states the manifest's SIZE, but the data inflates to more than that."""
    href, size = hostile.first_file(hostile.manifest_text(lost_item.path))
    hostile.entry_replace(lost_item.path, href, bytes(size * 50))
    hostile.declared_size_set(lost_item.path, href, size)
    state = before(bitstream_storage)

    assert_rejected(lost_item.path, state, bitstream_storage, f"file {href} cannot be read from the zip")


def test_manifest_sizes_invalid(lost_item, bitstream_storage):
    text = hostile.manifest_text(lost_item.path)
    sizes = re.findall(r'<file [^>]*SIZE="(\d+)"[^>]*>\s*<FLocat [^>]*xlink:href="([^"]+)"', text)
    last_size, last_href = sizes[-1]
    cases = {
        "negative": ("-5", "SIZE '-5' is not a non-negative integer"),
        "signed": ("+7", "SIZE '+7' is not a non-negative integer"),
        "absurd": ("99999999999999999999999999", "but the manifest states 99999999999999999999999999"),
        # The last file is false, so the check must run before the first file is stored.
        "false": (
            str(int(last_size) + 1),
            f"file {last_href} has {last_size} bytes, but the manifest states {int(last_size) + 1}",
        ),
    }
    state = before(bitstream_storage)
    for label, (size, expected) in cases.items():
        path = package_copy(lost_item.path, label)
        hostile.manifest_edit(path, lambda text: text.replace(f'SIZE="{last_size}"', f'SIZE="{size}"'))

        assert_rejected(path, state, bitstream_storage, expected)


def test_names_differing_in_case(lost_item, bitstream_storage):
    href, _size = hostile.first_file(hostile.manifest_text(lost_item.path))
    data = dict((info.filename, data) for info, data in hostile.zip_entries(lost_item.path))[href]
    hostile.entry_add(lost_item.path, href.upper(), data)
    state = before(bitstream_storage)

    assert_rejected(
        lost_item.path,
        state,
        bitstream_storage,
        f"two entries whose names differ only in case: {href!r} and {href.upper()!r}",
    )


# --- manifest and zip out of step ---------------------------------------------------------------


def test_unlisted_entry_warned_not_stored(lost_item, bitstream_storage, capsys):
    hostile.entry_add(lost_item.path, "extra.txt", b"not in the manifest")
    state = before(bitstream_storage)

    packager("-r", str(lost_item.path))

    assert "zip entry extra.txt is not named in the manifest; it is not stored" in capsys.readouterr().err
    stored = [(bitstream_storage / name).read_bytes() for name in stored_files(bitstream_storage)]
    assert b"not in the manifest" not in stored
    assert len(stored) - len(state.files) == item_file_count(lost_item.handle)


def test_renamed_entry_missing(lost_item, bitstream_storage):
    href, _size = hostile.first_file(hostile.manifest_text(lost_item.path))
    hostile.entry_rename(lost_item.path, href, "renamed.pdf")
    state = before(bitstream_storage)

    assert_rejected(
        lost_item.path, state, bitstream_storage, f"names the file {href!r} in its manifest, but the zip has no"
    )


# --- malformed manifests ------------------------------------------------------------------------


MISSING_ATTRIBUTES = [
    ("file", "ID", "a file element has no ID"),
    ("fileGrp", "USE", "has no USE attribute"),
    ("mets", "TYPE", "mets TYPE is None"),
    ("mets", "PROFILE", "mets PROFILE is None"),
    ("FLocat", "xlink:href", "has no FLocat with LOCTYPE 'URL' and an xlink:href"),
    ("FLocat", "LOCTYPE", "has no FLocat with LOCTYPE 'URL' and an xlink:href"),
    ("field", "element", "lacks its mdschema or element attribute"),
]


def test_required_attributes_missing(lost_item, bitstream_storage):
    state = before(bitstream_storage)
    for index, (element, attribute, expected) in enumerate(MISSING_ATTRIBUTES):
        path = package_copy(lost_item.path, f"case-{index}")
        hostile.manifest_edit(path, lambda text: hostile.attribute_drop(text, f"(?:dim:)?{element}", attribute))

        assert_rejected(path, state, bitstream_storage, expected)


def site_tree_cases(folder: Path) -> dict[str, tuple]:
    """Return site-tree mutations, each as (edit of a folder copy, texts the rejection must name)."""
    order = walk_order(folder, SITE_PACKAGE)
    collection = next(name for name in order if name.startswith("COLLECTION@"))
    community = order[order.index(collection) - 1]
    assert community.startswith("COMMUNITY@")
    child = hostile.child_hrefs(hostile.manifest_text(folder / collection))[0]

    def child_set(href: str):
        def edit(copy: Path) -> None:
            hostile.manifest_edit(copy / collection, lambda text: hostile.child_href_set(text, child, href))

        return edit

    return {
        "child-scheme": (
            child_set(f"file:///tmp/{child}"),
            [f"Package {collection} references a child outside its folder: 'file:///tmp/{child}'"],
        ),
        "child-unknown-type": (
            lambda copy: hostile.manifest_edit(
                copy / collection,
                lambda text: hostile.replace_once(text, 'TYPE="DSpace ITEM">', 'TYPE="DSpace BUNDLE">'),
            ),
            [collection, "TYPE 'DSpace BUNDLE' is not a community"],
        ),
        "lists-itself": (child_set(collection), [f"{collection} lists {collection}", "The package tree has a cycle"]),
        "lists-its-parent": (
            child_set(community),
            [f"{community} lists {collection} lists {community}", "The package tree has a cycle"],
        ),
    }


def test_site_tree_malformed(wiped_site_folder, bitstream_storage):
    state = before(bitstream_storage)
    for label, (edit, expected) in site_tree_cases(wiped_site_folder).items():
        copy = folder_copy(wiped_site_folder, label)
        edit(copy)

        assert_site_rejected(copy, state, bitstream_storage, *expected)


def test_verify_reports_cycle(wiped_site_folder, capsys):
    edit, _expected = site_tree_cases(wiped_site_folder)["lists-itself"]
    edit(wiped_site_folder)
    collection = next(name for name in walk_order(wiped_site_folder, SITE_PACKAGE) if name.startswith("COLLECTION@"))

    with pytest.raises(CommandError):
        packager("--verify", "-a", str(wiped_site_folder / SITE_PACKAGE))

    assert f"child package {collection} is above it in the package tree" in capsys.readouterr().err
