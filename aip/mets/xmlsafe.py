"""Parse XML from a package without letting the document reach anything outside itself.

Packages come from outside, so ``parse_xml``:

1. parses with an lxml parser that loads no DTD, resolves no entity, opens no
   network connection and keeps libxml2's size limits (``huge_tree`` off).
   A resolver that rejects every request backs this up.
2. rejects any document with a DOCTYPE, because DSpace never writes one and
   entity declarations are the usual vehicle of XML attacks.
3. rejects documents nested deeper than ``MAX_DEPTH`` elements.

Syntax errors become ``InvalidPackageError``; attacks and exceeded limits
become ``UnsafePackageError``. Both name the source.
"""
from __future__ import annotations

from lxml import etree

from aip.errors import InvalidPackageError, UnsafePackageError

# The DSpace 1.7 sample manifests nest 11 levels deep (mets/amdSec/techMD/mdWrap/xmlData/premis/...).
# libxml2 2.14 stops at 256 levels by itself when huge_tree is off, and reports that as a
# resource-limit error, which is mapped to UnsafePackageError below.
MAX_DEPTH = 256


class _RejectingResolver(etree.Resolver):
    """Resolver that raises on every request for an external DTD, entity or include."""

    def resolve(self, system_url, public_id, context):
        raise UnsafePackageError(f"The XML tried to load the external resource {system_url!r}.")


def _new_parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        no_network=True,
        huge_tree=False,
    )
    parser.resolvers.add(_RejectingResolver())
    return parser


def parse_xml(data: bytes, *, source: str) -> etree._Element:
    """Parse ``data`` and return its root element.

    Raises ``UnsafePackageError`` for a DOCTYPE, an external resource or a document
    that exceeds the nesting or size limits, and ``InvalidPackageError`` for
    malformed XML. ``source`` names the document in the messages.
    """
    try:
        root = etree.fromstring(data, _new_parser())
    except UnsafePackageError as error:
        raise UnsafePackageError(f"{source}: {error}") from None
    except etree.XMLSyntaxError as error:
        if error.code == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
            raise UnsafePackageError(f"{source}: the XML exceeds a parser limit: {error.msg}") from None
        raise InvalidPackageError(f"{source}: the XML is not well-formed: {error.msg}") from None

    _reject_doctype(root, source)
    _reject_deep_nesting(root, source)
    return root


def _reject_doctype(root: etree._Element, source: str) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafePackageError(
            f"{source}: the XML has a DOCTYPE declaration ({docinfo.doctype or 'internal subset'}). "
            "DSpace AIP manifests never contain one, so the document is rejected."
        )


def _reject_deep_nesting(root: etree._Element, source: str) -> None:
    depth = 0
    for event, _element in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > MAX_DEPTH:
            raise UnsafePackageError(f"{source}: the XML nests elements deeper than {MAX_DEPTH} levels.")
