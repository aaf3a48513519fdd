"""Build hostile and broken packages from real exported AIPs, each with one change.

Every function rewrites a package in place. The tests start from packages that
the exporter wrote, so each package differs from a valid one only by the attack
or damage it carries, and no binary fixture is kept in the repository.
"""
from __future__ import annotations

import re
import stat
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

CENTRAL_HEADER = b"PK\x01\x02"
# Offsets of the uncompressed size in a local file header and in a central directory header.
LOCAL_SIZE_OFFSET = 22
CENTRAL_SIZE_OFFSET = 24

EXTERNAL_ENTITY = '<!DOCTYPE mets [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
# Port 9 (discard) on this machine: nothing listens there, and no request leaves it.
EXTERNAL_DTD = '<!DOCTYPE mets SYSTEM "http://127.0.0.1:9/mets.dtd">'
# lol1 is ten "lol", and each further level ten of the one before, so lol9 expands to 3 * 10**9 characters.
BILLION_LAUGHS = (
    '<!DOCTYPE mets [<!ENTITY lol "lol"><!ENTITY lol1 "' + "&lol;" * 10 + '">'
    + "".join(f'<!ENTITY lol{level} "' + f"&lol{level - 1};" * 10 + '">' for level in range(2, 10))
    + "]>"
)


# --- zip level ------------------------------------------------------------------------------


def zip_entries(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def zip_write(path: Path, entries: list[tuple[zipfile.ZipInfo, bytes]]) -> None:
    """Write ``entries`` as a new zip at ``path``, keeping each ZipInfo's name, mode bits and method."""
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)


def entry_info(name: str, *, mode: int = stat.S_IFREG | 0o644, method: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2002, 11, 4, 0, 0, 0))
    info.compress_type = method
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def entry_add(path: Path, name: str, data: bytes, **info_options) -> None:
    """Append an entry, allowing names and modes that zipfile's own helpers would refuse or normalise."""
    entries = zip_entries(path)
    entries.append((entry_info(name, **info_options), data))
    zip_write(path, entries)


def symlink_add(path: Path, name: str, target: str) -> None:
    """Append a symbolic link entry as Info-ZIP stores one: the link target is the entry's data."""
    entry_add(path, name, target.encode("utf-8"), mode=stat.S_IFLNK | 0o777)


def entry_replace(path: Path, name: str, data: bytes) -> None:
    entries = [(info, data if info.filename == name else content) for info, content in zip_entries(path)]
    zip_write(path, entries)


def entry_rename(path: Path, old: str, new: str) -> None:
    entries = zip_entries(path)
    renamed = []
    for info, data in entries:
        if info.filename == old:
            info = entry_info(new)
        renamed.append((info, data))
    assert any(info.filename == new for info, _ in renamed), f"the package has no entry {old!r}"
    zip_write(path, renamed)


def declared_size_set(path: Path, name: str, size: int) -> None:
    """Make the zip state ``size`` as the uncompressed size of ``name``, leaving its data as it is."""
    with zipfile.ZipFile(path) as archive:
        local_offset = archive.getinfo(name).header_offset
        central_offset = archive.start_dir
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, local_offset + LOCAL_SIZE_OFFSET, size)
    position = central_offset
    patched = False
    while data[position:position + 4] == CENTRAL_HEADER:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        if data[position + 46:position + 46 + name_length].decode("utf-8") == name:
            struct.pack_into("<I", data, position + CENTRAL_SIZE_OFFSET, size)
            patched = True
        position += 46 + name_length + extra_length + comment_length
    assert patched, f"the central directory has no entry {name!r}"
    path.write_bytes(bytes(data))


def extract_version_set(path: Path, name: str, version: int) -> None:
    """Set the "version needed to extract" of ``name`` in the central directory (20 means 2.0)."""
    with zipfile.ZipFile(path) as archive:
        central_offset = archive.start_dir
    data = bytearray(path.read_bytes())
    position = central_offset
    while data[position:position + 4] == CENTRAL_HEADER:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        if data[position + 46:position + 46 + name_length].decode("utf-8") == name:
            struct.pack_into("<H", data, position + 6, version)
            path.write_bytes(bytes(data))
            return
        position += 46 + name_length + extra_length + comment_length
    raise AssertionError(f"the central directory has no entry {name!r}")


# --- manifest level -------------------------------------------------------------------------


def manifest_text(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read("mets.xml").decode("utf-8")


def manifest_edit(path: Path, edit: Callable[[str], str]) -> None:
    entry_replace(path, "mets.xml", edit(manifest_text(path)).encode("utf-8"))


def replace_once(text: str, old: str, new: str) -> str:
    """Replace the first ``old``, failing the test when the manifest does not contain it."""
    assert old in text, f"the manifest does not contain {old!r}"
    return text.replace(old, new, 1)


def sub_once(text: str, pattern: str, replacement: str | Callable[[re.Match], str]) -> str:
    rewritten, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, f"the manifest does not match {pattern!r}"
    return rewritten


def doctype_add(text: str, doctype: str, *, body_entity: str | None = None) -> str:
    """Put ``doctype`` after the XML declaration, and optionally a reference to an entity in the first xmlData."""
    text = sub_once(text, r"(<\?xml[^>]*\?>)", lambda match: match.group(1) + "\n" + doctype)
    if body_entity is not None:
        text = sub_once(text, r"(<xmlData[^>]*>)", lambda match: match.group(1) + f"&{body_entity};")
    return text


def deep_nesting_add(text: str, depth: int) -> str:
    """Nest ``depth`` elements inside the first xmlData."""
    nested = "<deep>" * depth + "</deep>" * depth
    return sub_once(text, r"(<xmlData[^>]*>)", lambda match: match.group(1) + nested)


def first_file(text: str) -> tuple[str, int]:
    """Return the FLocat href and SIZE of the first file element of a manifest."""
    match = re.search(r'<file [^>]*SIZE="(\d+)"[^>]*>\s*<FLocat [^>]*xlink:href="([^"]+)"', text)
    assert match, "the manifest has no file element with a SIZE"
    return match.group(2), int(match.group(1))


def file_href_set(text: str, href: str) -> str:
    return sub_once(text, r'(<FLocat [^>]*xlink:href=")[^"]+(")', lambda match: match.group(1) + href + match.group(2))


def file_size_set(text: str, size: str) -> str:
    return sub_once(text, r'(<file [^>]*SIZE=")\d+(")', lambda match: match.group(1) + size + match.group(2))


def licence_href_set(text: str, href: str) -> str:
    return sub_once(text, r'(<mdRef [^>]*xlink:href=")[^"]+(")', lambda match: match.group(1) + href + match.group(2))


def rdf_licence_reference(path: Path, rdf: bytes, name: str = "license_rdf.xml") -> None:
    """Turn the deposit licence mdRef into a Creative Commons RDF reference to a new entry holding ``rdf``."""
    def edit(text: str) -> str:
        text = replace_once(text, 'OTHERMDTYPE="DSpaceDepositLicense"', 'OTHERMDTYPE="CreativeCommonsRDF"')
        return licence_href_set(text, name)

    manifest_edit(path, edit)
    entry_add(path, name, rdf)


def attribute_drop(text: str, element: str, attribute: str) -> str:
    """Remove ``attribute`` from the first ``element`` start tag that has it."""
    pattern = rf'(<{element}\b[^>]*?)\s{attribute}="[^"]*"'
    return sub_once(text, pattern, lambda match: match.group(1))


def child_href_set(text: str, old: str, new: str) -> str:
    """Point the URL mptr of child package ``old`` at ``new``."""
    return replace_once(text, f'LOCTYPE="URL" xlink:type="simple" xlink:href="{old}"',
                        f'LOCTYPE="URL" xlink:type="simple" xlink:href="{new}"')


def child_hrefs(text: str) -> list[str]:
    return re.findall(r'<mptr [^>]*LOCTYPE="URL"[^>]*xlink:href="([^"]+)"', text)
