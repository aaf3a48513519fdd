"""Fuzz the package reader, verify and ingest with mutated copies of a real exported AIP.

Hypothesis flips bytes of the zip and drops, duplicates and changes elements and
attributes of its mets.xml. Whatever comes out, opening, reading, verifying and
ingesting the package may fail only with the project's own ``AipError`` family:
any other exception is a bug. Each ingest runs in a transaction that is rolled
back, and the files it stored are deleted, so every example starts from the same
repository.

The "ci" profile runs a fixed, bounded set of examples (derandomized). Set
HYPOTHESIS_PROFILE=deep to search longer and at random.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from lxml import etree

from aip.errors import AipError
from aip.mets.reader import read_manifest
from aip.options import ingest_options
from aip.package import package_open
from aip.services.ingest import package_ingest
from aip.services.verify import tree_verify
from tests.aip import hostile
from tests.aip.conftest import ADMIN_EMAIL, stored_files
from tests.aip.test_ingest_errors import item_delete, item_package_export, unmapped_item

COMMON = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
hypothesis_settings.register_profile("ci", derandomize=True, max_examples=300, **COMMON)
hypothesis_settings.register_profile("deep", max_examples=5000, **COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

pytestmark = pytest.mark.django_db

# Values that a hostile or careless producer might put in an attribute.
ATTRIBUTE_VALUES = st.one_of(
    st.sampled_from(
        ["", " ", "-1", "0", "99999999999999999999", "../x", "/etc/passwd", "file:///etc/passwd", "DSpace ITEM",
         "DSpace SITE", "DSpace BUNDLE", "URL", "HANDLE", "MD5", "SHA-256", "mets.xml", "amd_1 amd_1", "hdl:"]
    ),
    st.text(max_size=20),
)


def reader_check(path: Path) -> None:
    """Open the package and read its manifest, as every command does first."""
    try:
        with package_open(path) as reader:
            read_manifest(reader.manifest_bytes(), source=path.name)
    except AipError:
        pass


def verify_check(path: Path) -> None:
    """Verify reports every problem in its report, so it must not raise at all."""
    tree_verify(path=path, recursive=False, validate=False)


def ingest_check(path: Path, root: Path, files_before: list[str]) -> None:
    """Restore the package in a transaction that is rolled back, then delete what it stored."""
    try:
        with transaction.atomic():
            package_ingest(path=path, options=ingest_options({}, restore=True), eperson_email=ADMIN_EMAIL)
            transaction.set_rollback(True)
    except AipError:
        pass
    finally:
        for name in set(stored_files(root)) - set(files_before):
            (root / name).unlink()


def all_checks(path: Path, root: Path, files_before: list[str]) -> None:
    reader_check(path)
    verify_check(path)
    ingest_check(path, root, files_before)


# --- mutations ----------------------------------------------------------------------------------


def bytes_flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    mutated = bytearray(data)
    for position, mask in flips:
        mutated[position % len(mutated)] ^= mask
    return bytes(mutated)


def manifest_mutate(manifest: bytes, operations: list[tuple[str, int, int, str]]) -> bytes:
    """Apply (operation, element index, attribute index, value) steps to the manifest's element tree."""
    root = etree.fromstring(manifest)
    for operation, element_index, attribute_index, value in operations:
        elements = list(root.iter(etree.Element))
        element = elements[element_index % len(elements)]
        attributes = list(element.attrib)
        if operation == "drop-element" and element is not root:
            element.getparent().remove(element)
        elif operation == "duplicate-element" and element is not root:
            element.addnext(etree.fromstring(etree.tostring(element)))
        elif operation == "drop-attribute" and attributes:
            del element.attrib[attributes[attribute_index % len(attributes)]]
        elif operation == "change-attribute" and attributes:
            element.set(attributes[attribute_index % len(attributes)], value)
        elif operation == "change-text":
            element.text = value
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def xml_compatible(text: str) -> bool:
    """Tell whether lxml can store ``text`` in an attribute: no control characters and no lone surrogates."""
    return all(ord(char) >= 32 and not 0xD800 <= ord(char) <= 0xDFFF for char in text)


MANIFEST_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["drop-element", "duplicate-element", "drop-attribute", "change-attribute", "change-text"]),
        st.integers(min_value=0, max_value=10_000),
        st.integers(min_value=0, max_value=100),
        ATTRIBUTE_VALUES.filter(xml_compatible),
    ),
    min_size=1,
    max_size=4,
)
BYTE_FLIPS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2**31), st.integers(min_value=1, max_value=255)),
    min_size=1,
    max_size=6,
)


@pytest.fixture
def base_package(demo, tmp_path, bitstream_storage) -> Path:
    """A real exported item package whose item was then deleted, so the package restores cleanly."""
    item = unmapped_item()
    package = item_package_export(item, tmp_path / "base")
    item_delete(item)
    return package.path


def test_fuzz_zip_bytes(base_package, tmp_path, bitstream_storage):
    original = base_package.read_bytes()
    files_before = stored_files(bitstream_storage)
    target = tmp_path / "case" / base_package.name
    target.parent.mkdir()

    @hypothesis_settings(hypothesis_settings.get_profile(PROFILE))
    @given(flips=BYTE_FLIPS, cut=st.one_of(st.none(), st.integers(min_value=0, max_value=len(original))))
    def run(flips, cut):
        data = bytes_flip(original, flips)
        target.write_bytes(data if cut is None else data[:cut])
        all_checks(target, bitstream_storage, files_before)

    run()


def test_fuzz_manifest(base_package, tmp_path, bitstream_storage):
    manifest = hostile.manifest_text(base_package).encode("utf-8")
    files_before = stored_files(bitstream_storage)
    target = tmp_path / "case" / base_package.name

    @hypothesis_settings(hypothesis_settings.get_profile(PROFILE))
    @given(operations=MANIFEST_OPERATIONS)
    def run(operations):
        shutil.copyfile(base_package, target)
        hostile.entry_replace(target, "mets.xml", manifest_mutate(manifest, operations))
        all_checks(target, bitstream_storage, files_before)

    target.parent.mkdir()
    run()


def test_fuzz_untouched_package_ingests(base_package, bitstream_storage):
    """The base package itself passes every check, so the fuzz tests start from a valid package."""
    with package_open(base_package) as reader:
        manifest = read_manifest(reader.manifest_bytes(), source=base_package.name)
    report = tree_verify(path=base_package, recursive=False, validate=False)

    assert manifest.object_type == "ITEM"
    assert report.problems == []
    with zipfile.ZipFile(base_package) as archive:
        assert archive.testzip() is None


def test_unknown_zip_version_rejected(base_package, bitstream_storage):
    """An example the fuzzer found: a flipped "version needed to extract" made zipfile raise NotImplementedError."""
    hostile.extract_version_set(base_package, "mets.xml", 0xFF)

    with pytest.raises(AipError, match="is not a readable zip file \\(zip file version 25.5\\)"):
        package_open(base_package)
    report = tree_verify(path=base_package, recursive=False, validate=False)
    assert "zip file version 25.5" in report.problems[0]
