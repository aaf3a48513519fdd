"""Package writing: the zip method of each entry, the local headers that Java readers
need, determinism, resume checks, the background MD5, and a round trip of a
package with a stored entry."""
from __future__ import annotations

import hashlib
import io
import random
import shutil
import struct
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from aip.digests import BackgroundMd5
from aip.errors import ChecksumMismatchError
from aip.package import (
    CHUNK_SIZE,
    MANIFEST_NAME,
    SAMPLE_BYTES,
    STORE_MIN_BYTES,
    PackageEntry,
    compress_method,
    package_matches,
    write_package,
)
from repository.models import Bitstream, Item
from tests.aip.conftest import export_site, package_bytes, packager, repository_wipe

MANIFEST = b"<mets/>"
LAST_MODIFIED = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
# Zip local file header: signature, version needed, flags, method, time, date, CRC-32,
# compressed size, size, name length and extra field length, all little-endian.
LOCAL_HEADER = struct.Struct("<4sHHHHHLLLHH")
DATA_DESCRIPTOR_FLAG = 0x08
ZIP64_SIZE = 0xFFFFFFFF


# --- helpers ------------------------------------------------------------------------------


def random_bytes(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def text_bytes(size: int) -> bytes:
    line = b"<dim:field mdschema=\"dc\" element=\"title\">A title of an item</dim:field>\n"
    return (line * (size // len(line) + 1))[:size]


def entry_of(name: str, content: bytes, *, size: int | None = None, md5: str | None = None) -> PackageEntry:
    return PackageEntry(
        name=name,
        size=len(content) if size is None else size,
        open=lambda: io.BytesIO(content),
        expected_md5=md5 or hashlib.md5(content).hexdigest(),
    )


def package_write(path: Path, contents: dict[str, bytes]) -> Path:
    entries = [entry_of(name, content) for name, content in contents.items()]
    write_package(path, manifest=MANIFEST, entries=entries, last_modified=LAST_MODIFIED)
    return path


def local_header(path: Path, info: zipfile.ZipInfo) -> dict[str, int]:
    """Read the local file header of ``info`` from the zip's bytes, as Java's ZipInputStream reads it."""
    with path.open("rb") as stream:
        stream.seek(info.header_offset)
        fields = LOCAL_HEADER.unpack(stream.read(LOCAL_HEADER.size))
    signature, _version, flags, method, _time, _date, crc, compressed, size, _name_length, _extra_length = fields
    return {
        "signature": signature,
        "flags": flags,
        "method": method,
        "crc": crc,
        "compressed": compressed,
        "size": size,
    }


def methods_of(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: info.compress_type for info in archive.infolist()}


@pytest.fixture
def mixed_contents() -> dict[str, bytes]:
    """A large incompressible file, a large text file and a small incompressible file."""
    return {
        "bitstream_1.bin": random_bytes(3 * CHUNK_SIZE + 12345),
        "bitstream_2.txt": text_bytes(2 * CHUNK_SIZE),
        "bitstream_3.bin": random_bytes(STORE_MIN_BYTES - 1),
    }


@pytest.fixture
def mixed_package(tmp_path, mixed_contents) -> Path:
    return package_write(tmp_path / "ITEM@123456789-5.zip", mixed_contents)


# --- choice of method ----------------------------------------------------------------------


def test_method_random_large_stored():
    content = random_bytes(STORE_MIN_BYTES)

    assert compress_method(content, len(content)) == zipfile.ZIP_STORED


def test_method_text_large_deflated():
    content = text_bytes(STORE_MIN_BYTES)

    assert compress_method(content, len(content)) == zipfile.ZIP_DEFLATED


def test_method_random_small_deflated():
    content = random_bytes(STORE_MIN_BYTES - 1)

    assert compress_method(content, len(content)) == zipfile.ZIP_DEFLATED


def test_method_depends_on_sample_only():
    compressible_start = text_bytes(SAMPLE_BYTES) + random_bytes(CHUNK_SIZE - SAMPLE_BYTES)
    incompressible_start = random_bytes(SAMPLE_BYTES) + text_bytes(CHUNK_SIZE - SAMPLE_BYTES)

    assert compress_method(compressible_start, 10 * CHUNK_SIZE) == zipfile.ZIP_DEFLATED
    assert compress_method(incompressible_start, 10 * CHUNK_SIZE) == zipfile.ZIP_STORED


def test_write_package_entry_methods(mixed_package):
    methods = methods_of(mixed_package)

    assert methods[MANIFEST_NAME] == zipfile.ZIP_DEFLATED
    assert methods["bitstream_1.bin"] == zipfile.ZIP_STORED
    assert methods["bitstream_2.txt"] == zipfile.ZIP_DEFLATED
    assert methods["bitstream_3.bin"] == zipfile.ZIP_DEFLATED


def test_write_package_contents_readable(mixed_package, mixed_contents):
    with zipfile.ZipFile(mixed_package) as archive:
        assert archive.testzip() is None
        assert archive.read(MANIFEST_NAME) == MANIFEST
        for name, content in mixed_contents.items():
            assert archive.read(name) == content, f"{name} reads back different bytes"


# --- local headers --------------------------------------------------------------------------


def test_stored_entry_local_header_complete(mixed_package):
    with zipfile.ZipFile(mixed_package) as archive:
        info = archive.getinfo("bitstream_1.bin")
    header = local_header(mixed_package, info)

    assert header["signature"] == b"PK\x03\x04"
    assert header["method"] == zipfile.ZIP_STORED
    assert header["flags"] & DATA_DESCRIPTOR_FLAG == 0
    assert header["crc"] == info.CRC
    assert header["size"] == info.file_size
    assert header["compressed"] == info.file_size


def test_no_entry_uses_data_descriptor(mixed_package):
    with zipfile.ZipFile(mixed_package) as archive:
        infos = archive.infolist()

    for info in infos:
        header = local_header(mixed_package, info)
        assert header["flags"] & DATA_DESCRIPTOR_FLAG == 0, f"{info.filename} has a data descriptor"
        assert header["crc"] == info.CRC, f"{info.filename} has no CRC-32 in its local header"
        assert header["compressed"] == info.compress_size, f"{info.filename} has no size in its local header"


def test_stored_entry_no_zip64_under_4gib(mixed_package):
    with zipfile.ZipFile(mixed_package) as archive:
        info = archive.getinfo("bitstream_1.bin")
    header = local_header(mixed_package, info)

    assert header["size"] != ZIP64_SIZE
    assert info.extract_version < 45


def test_stored_entry_zip64_from_recorded_size(tmp_path, monkeypatch, mixed_contents):
    """With zipfile's ZIP64 limit lowered to 2 MiB, the 3 MiB entry shows the headers a file over 4 GiB gets."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 2 * CHUNK_SIZE)
    path = package_write(tmp_path / "ITEM@123456789-5.zip", mixed_contents)

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("bitstream_1.bin")
        content = archive.read("bitstream_1.bin")
    header = local_header(path, info)

    assert header["method"] == zipfile.ZIP_STORED
    assert header["flags"] & DATA_DESCRIPTOR_FLAG == 0
    assert header["size"] == ZIP64_SIZE
    assert header["compressed"] == ZIP64_SIZE
    assert header["crc"] == info.CRC
    assert info.extract_version >= 45
    assert content == mixed_contents["bitstream_1.bin"]


# --- determinism and resume -----------------------------------------------------------------


def test_write_package_twice_identical(tmp_path, mixed_contents):
    first = package_write(tmp_path / "first" / "ITEM@123456789-5.zip", mixed_contents)
    second = package_write(tmp_path / "second" / "ITEM@123456789-5.zip", mixed_contents)

    assert first.read_bytes() == second.read_bytes()


def test_package_matches_own_output(mixed_package, mixed_contents):
    entries = [entry_of(name, content) for name, content in mixed_contents.items()]

    assert package_matches(mixed_package, manifest=MANIFEST, entries=entries)


def test_package_matches_rejects_other_method(tmp_path, mixed_contents):
    """A package whose large random file was deflated (as before stored entries existed) is written again."""
    path = tmp_path / "ITEM@123456789-5.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.comment = b"METS archive created by aip-backup (DSpace AIP format)"
        archive.writestr(MANIFEST_NAME, MANIFEST)
        for name, content in mixed_contents.items():
            archive.writestr(name, content)
    entries = [entry_of(name, content) for name, content in mixed_contents.items()]

    assert methods_of(path)["bitstream_1.bin"] == zipfile.ZIP_DEFLATED
    assert not package_matches(path, manifest=MANIFEST, entries=entries)


# --- damaged files --------------------------------------------------------------------------


class CountingStream(io.BytesIO):
    """A stream that counts the bytes read from it."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_longer_file_stops_copy(tmp_path):
    content = random_bytes(8 * CHUNK_SIZE)
    stream = CountingStream(content)
    recorded_size = 2 * CHUNK_SIZE
    entry = PackageEntry(name="bitstream_1.bin", size=recorded_size, open=lambda: stream, expected_md5="0" * 32)
    path = tmp_path / "export" / "ITEM@123456789-5.zip"

    with pytest.raises(ChecksumMismatchError, match="has more than 2097152 bytes, but the repository records 2097152"):
        write_package(path, manifest=MANIFEST, entries=[entry], last_modified=LAST_MODIFIED)

    assert stream.bytes_read <= recorded_size + CHUNK_SIZE
    assert list(path.parent.iterdir()) == []


def test_stored_entry_wrong_md5_rejected(tmp_path):
    content = random_bytes(2 * CHUNK_SIZE)
    entry = entry_of("bitstream_1.bin", content, md5=hashlib.md5(b"other").hexdigest())
    path = tmp_path / "export" / "ITEM@123456789-5.zip"

    with pytest.raises(ChecksumMismatchError, match="bitstream_1.bin"):
        write_package(path, manifest=MANIFEST, entries=[entry], last_modified=LAST_MODIFIED)

    assert list(path.parent.iterdir()) == []


# --- background MD5 -------------------------------------------------------------------------


def md5_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "md5"]


def test_background_md5_equals_hashlib():
    chunks = [random_bytes(CHUNK_SIZE, seed) for seed in range(9)] + [b"", b"tail"]

    with BackgroundMd5() as digest:
        for chunk in chunks:
            digest.update(chunk)
        result = digest.hexdigest()

    assert result == hashlib.md5(b"".join(chunks)).hexdigest()


def test_background_md5_one_chunk_no_thread():
    before = len(md5_threads())

    with BackgroundMd5() as digest:
        digest.update(b"one chunk")
        digest.update(b"")
        assert len(md5_threads()) == before
        result = digest.hexdigest()

    assert result == hashlib.md5(b"one chunk").hexdigest()


def test_background_md5_thread_ends_after_error():
    before = len(md5_threads())

    with pytest.raises(RuntimeError, match="copy failed"):
        with BackgroundMd5() as digest:
            digest.update(b"first")
            digest.update(b"second")
            raise RuntimeError("copy failed")

    assert len(md5_threads()) == before


# --- round trip -----------------------------------------------------------------------------


@pytest.fixture
def large_bitstream(demo, bitstream_storage) -> Bitstream:
    """Give one bitstream of an archived item 3 MiB of random content, which export stores uncompressed."""
    bitstream = (
        Bitstream.objects.filter(bundle__item__in=Item.objects.filter(handle__isnull=False, withdrawn=False))
        .exclude(file="")
        .order_by("uuid")
        .first()
    )
    content = random_bytes(3 * CHUNK_SIZE + 777, seed=3)
    (bitstream_storage / bitstream.file.name).write_bytes(content)
    bitstream.size_bytes = len(content)
    bitstream.checksum = hashlib.md5(content).hexdigest()
    bitstream.checksum_algorithm = "MD5"
    bitstream.save()
    return bitstream


def stored_entry_names(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            names += [f"{path.name}:{info.filename}" for info in archive.infolist() if info.compress_type == 0]
    return names


def test_stored_entry_roundtrip_identical(large_bitstream, tmp_path, bitstream_storage):
    first = tmp_path / "before"
    export_site(first)
    checksum = large_bitstream.checksum
    repository_wipe()
    shutil.rmtree(bitstream_storage)
    bitstream_storage.mkdir()

    packager("-r", "-a", "-f", "-u", "-i", "123456789/0", str(first / "SITE@123456789-0.zip"))
    second = tmp_path / "after"
    export_site(second)

    assert len(stored_entry_names(first)) == 1
    assert Bitstream.objects.get(uuid=large_bitstream.uuid).checksum == checksum
    assert package_bytes(second) == package_bytes(first)
