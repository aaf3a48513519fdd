"""Registry rows (metadata fields, bitstream formats) committed apart from the ingest that needs them.

The part jobs of a split restore run side by side, each in one long transaction.
Suppose each created the metadata fields and bitstream formats it needs inside its
own transaction. Two parts that need the same new field would both insert it. The
second would then wait for the whole transaction of the first, and fail on the
unique constraint when the first commits. Committing such rows at once, on a connection of their own,
keeps the parts apart. The price: a part that fails later leaves the registry rows
it added, while everything else it wrote is rolled back.
"""
from __future__ import annotations

from django.db import connections, models


def registry_row_commit(model: type[models.Model], values: dict) -> None:
    """Insert a row of ``model`` with ``values`` (field name to database value) and commit it, unless its key exists.

    On PostgreSQL the insert waits for a concurrent insert of the same key and then does
    nothing. Every field of ``model`` without a database default must be in ``values``.
    """
    own = connections.create_connection("default")
    try:
        fields = [model._meta.get_field(name) for name in values]
        columns = ", ".join(own.ops.quote_name(field.column) for field in fields)
        placeholders = ", ".join(["%s"] * len(fields))
        parameters = [field.get_db_prep_save(value, own) for field, value in zip(fields, values.values())]
        table = own.ops.quote_name(model._meta.db_table)
        statement = f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING"
        with own.cursor() as cursor:
            cursor.execute(statement, parameters)
    finally:
        own.close()
