"""Validate mets.xml against local copies of the METS, MODS, PREMIS and METSRights schemas.

Schema references to remote URLs are resolved from the folder's ``catalog.xml``
(an OASIS XML catalog) or from files beside the including schema; anything else
fails, so validation never touches the network. DSpace writes ``rpName``,
``start-date``, ``end-date`` and ``in-effect`` on ``rights:Context``, which
METSRights.xsd does not declare: exactly those four attributes are added to the
Context type when the schema is loaded.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lxml import etree

from aip.errors import AipError, InvalidPackageError
from aip.mets.xmlsafe import parse_xml

DRIVER_SCHEMA = "dspace-aip-all.xsd"
CATALOG = "catalog.xml"
METSRIGHTS_FILE = "METSRights.xsd"
DSPACE_CONTEXT_ATTRIBUTES = ("rpName", "start-date", "end-date", "in-effect")
_CATALOG_NS = "urn:oasis:names:tc:entity:xmlns:xml:catalog"


class SchemaUnavailableError(AipError):
    """The schema folder is not set, or lacks a file validation needs."""


def _catalog(schema_dir: Path) -> dict[str, Path]:
    path = schema_dir / CATALOG
    if not path.is_file():
        raise SchemaUnavailableError(f"Schema folder {schema_dir} has no {CATALOG}; validation cannot map schema URLs.")
    mapping: dict[str, Path] = {}
    root = etree.parse(str(path), etree.XMLParser(no_network=True, resolve_entities=False)).getroot()
    for entry in root:
        remote = entry.get("name") or entry.get("systemId")
        local = entry.get("uri")
        if remote and local:
            mapping[remote] = schema_dir / local
    return mapping


def _with_dspace_attributes(xsd: bytes) -> bytes:
    """Return METSRights.xsd with DSpace's extra Context attributes declared."""
    tree = etree.fromstring(xsd, etree.XMLParser(no_network=True, resolve_entities=False))
    xs = "http://www.w3.org/2001/XMLSchema"
    context_type = tree.find(f"{{{xs}}}complexType[@name='ContextTYPE']")
    if context_type is None:
        raise SchemaUnavailableError("METSRights.xsd has no ContextTYPE; it is not the expected schema.")
    for name in DSPACE_CONTEXT_ATTRIBUTES:
        etree.SubElement(context_type, f"{{{xs}}}attribute", name=name, type="xs:string", use="optional")
    return etree.tostring(tree)


class _LocalResolver(etree.Resolver):
    def __init__(self, schema_dir: Path) -> None:
        super().__init__()
        self.schema_dir = schema_dir
        self.catalog = _catalog(schema_dir)

    def resolve(self, url, public_id, context):
        path = self.catalog.get(url)
        if path is None and url and not url.startswith(("http:", "https:", "ftp:")):
            path = Path(url.removeprefix("file://"))
        if path is None or not path.is_file():
            raise SchemaUnavailableError(
                f"Schema {url} is not in the schema folder {self.schema_dir}. Add it and list it in {CATALOG}."
            )
        data = path.read_bytes()
        if path.name == METSRIGHTS_FILE:
            data = _with_dspace_attributes(data)
        return self.resolve_string(data, context, base_url=str(path))


def schema_dir_or_error() -> str:
    """Return settings.AIP_SCHEMA_DIR, or raise when validation was requested without it."""
    from django.conf import settings

    if not settings.AIP_SCHEMA_DIR:
        raise SchemaUnavailableError(
            "Validation needs the folder of local METS, MODS, PREMIS and METSRights schemas: set AIP_SCHEMA_DIR, "
            "or run with -o validate=false."
        )
    return settings.AIP_SCHEMA_DIR


@lru_cache(maxsize=4)
def load_schema(schema_dir: str) -> etree.XMLSchema:
    """Return the validator for AIP manifests built from the folder ``schema_dir``."""
    folder = Path(schema_dir)
    driver = folder / DRIVER_SCHEMA
    if not driver.is_file():
        raise SchemaUnavailableError(
            f"Schema folder {folder} has no {DRIVER_SCHEMA}; set AIP_SCHEMA_DIR to the folder of AIP schemas."
        )
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(_LocalResolver(folder))
    try:
        return etree.XMLSchema(etree.parse(str(driver), parser))
    except etree.XMLSchemaParseError as error:
        raise SchemaUnavailableError(f"Schemas in {folder} could not be loaded: {error}") from None


def validate_manifest(data: bytes, *, schema_dir: str, source: str) -> None:
    """Raise ``InvalidPackageError`` listing the first schema errors of a mets.xml."""
    schema = load_schema(schema_dir)
    document = parse_xml(data, source=source)
    try:
        if schema.validate(document):
            return
    except etree.XMLSchemaValidateError as error:
        raise InvalidPackageError(f"{source}: mets.xml could not be validated: {error}") from None
    errors = "; ".join(f"line {entry.line}: {entry.message}" for entry in list(schema.error_log)[:5])
    raise InvalidPackageError(f"{source}: mets.xml is not valid against the AIP schemas: {errors}")
