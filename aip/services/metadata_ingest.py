"""Turn DIM values from a package into metadata values of an object.

The metadata registry is consulted through a per-run cache, so a run reads each
field once. A missing schema always fails; a missing field is created unless
createMetadataFields is false.
"""
from __future__ import annotations

from aip.errors import UnknownMetadataError
from aip.mets.model import DimValue
from aip.services.manifests import COLLECTION_FIELDS, COMMUNITY_FIELDS
from aip.services.registry_rows import registry_row_commit
from repository.models import Collection, MetadataField, MetadataSchema, MetadataValue, object_kwargs


class FieldRegistry:
    """Looks up, and when allowed creates, metadata fields for one ingest run."""

    def __init__(self, *, create_missing: bool, commit_apart: bool = False) -> None:
        self.create_missing = create_missing
        # New fields are committed at once on a connection of their own (see ``registry_rows``).
        self.commit_apart = commit_apart
        self._schemas: dict[str, MetadataSchema] = {}
        self._fields: dict[tuple[str, str, str | None], MetadataField] = {}

    def schema(self, short_id: str, *, source: str) -> MetadataSchema:
        if short_id not in self._schemas:
            schema = MetadataSchema.objects.filter(short_id=short_id).first()
            if schema is None:
                raise UnknownMetadataError(
                    f"Unknown Metadata Schema encountered ({short_id}) in {source}. Add the schema "
                    f"'{short_id}' in the admin (Metadata schemas) and run the command again; "
                    "its fields are created as packages are read."
                )
            self._schemas[short_id] = schema
        return self._schemas[short_id]

    def field(self, value: DimValue, *, source: str) -> MetadataField:
        key = (value.schema, value.element, value.qualifier or None)
        if key not in self._fields:
            schema = self.schema(value.schema, source=source)
            found = MetadataField.objects.filter(schema=schema, element=key[1], qualifier=key[2]).first()
            if found is None:
                found = self._create_field(schema, key, source=source)
            self._fields[key] = found
        return self._fields[key]

    def _create_field(self, schema: MetadataSchema, key, *, source: str) -> MetadataField:
        name = ".".join(part for part in key if part)
        if not self.create_missing:
            raise UnknownMetadataError(
                f"Metadata field {name} used in {source} is not in the registry, and createMetadataFields "
                "is false. Add the field in the admin or run again with -o createMetadataFields=true."
            )
        if not self.commit_apart:
            return MetadataField.objects.create(schema=schema, element=key[1], qualifier=key[2])
        values = {"schema": schema.pk, "element": key[1], "qualifier": key[2], "scope_note": ""}
        registry_row_commit(MetadataField, values)
        return MetadataField.objects.get(schema=schema, element=key[1], qualifier=key[2])


def values_replace(obj, values: list[DimValue], registry: FieldRegistry, *, source: str, existing: bool = True) -> None:
    """Replace every metadata value of ``obj`` with ``values``, keeping their order.

    ``existing=False`` states that ``obj`` has no values yet (new or just emptied), which saves the delete.
    """
    if existing:
        obj.metadata.all().delete()
    MetadataValue.objects.bulk_create(value_rows(obj, values, registry, source=source))


def value_rows(obj, values: list[DimValue], registry: FieldRegistry, *, source: str) -> list[MetadataValue]:
    """Return unsaved metadata values of ``obj``, one per DIM value, in order."""
    target = object_kwargs(obj)
    return [
        MetadataValue(
            field=registry.field(value, source=source),
            value=value.value,
            language=value.language or None,
            authority=value.authority or None,
            confidence=value.confidence if value.confidence is not None else MetadataValue.Confidence.UNSET,
            place=place,
            **target,
        )
        for place, value in enumerate(values)
    ]


def container_values(obj, values: list[DimValue]) -> list[DimValue]:
    """Map the fixed DIM fields of a community or collection AIP to the values it stores.

    Only dc fields count, each sets one value (a repeated field overwrites, as in
    DSpace), and an empty element means "unset". dc.identifier.uri comes from the
    handle and is not stored.
    """
    fields = COLLECTION_FIELDS if isinstance(obj, Collection) else COMMUNITY_FIELDS
    stored_by_aip = {aip_field: stored for aip_field, stored in fields}
    chosen: dict[tuple[str, str | None], DimValue] = {}
    for value in values:
        key = (value.element, value.qualifier or None)
        if value.schema != "dc" or key not in stored_by_aip or stored_by_aip[key] is None:
            continue
        element, qualifier = stored_by_aip[key]
        if value.value:
            chosen[(element, qualifier)] = DimValue(
                schema="dc", element=element, qualifier=qualifier, value=value.value, language=value.language
            )
        else:
            chosen.pop((element, qualifier), None)
    order = [stored for _, stored in fields if stored is not None]
    return [chosen[key] for key in order if key in chosen]


# Names are indexed for sorting; PostgreSQL rejects B-tree entries over about 2,700 bytes,
# and 500 characters stay below that even at 4 bytes each.
NAME_LENGTH = 500


def first_title(values: list[DimValue]) -> str:
    """Return the first dc.title, cut to the length the indexed ``name`` columns take."""
    for value in values:
        if value.schema == "dc" and value.element == "title" and not value.qualifier:
            return value.value[:NAME_LENGTH]
    return ""
