"""System checks for misspelt AIP section names and for a database setup that breaks job locks.

They run at start-up, so such a mistake shows before a backup fails on it.
"""
from django.conf import settings
from django.core import checks

from aip.mets.writer import ADMIN_SECTIONS, DEFAULT_DMD_TYPES


@checks.register()
def aip_section_settings(app_configs, **kwargs) -> list[checks.Error]:
    errors = []
    for name in settings.AIP_DISSEMINATE_DMD:
        if name not in DEFAULT_DMD_TYPES:
            errors.append(
                checks.Error(f"AIP_DISSEMINATE_DMD names {name!r}; allowed: {', '.join(DEFAULT_DMD_TYPES)}.", id="aip.E001")
            )
    for setting in ("AIP_DISSEMINATE_SECTIONS", "AIP_INGEST_IGNORED_SECTIONS"):
        for name in getattr(settings, setting):
            if name not in ADMIN_SECTIONS:
                errors.append(
                    checks.Error(f"{setting} names {name!r}; allowed: {', '.join(sorted(ADMIN_SECTIONS))}.", id="aip.E002")
                )
    return errors


@checks.register()
def advisory_lock_settings(app_configs, **kwargs) -> list[checks.Warning]:
    return transaction_pooling_warnings(settings.DATABASES)


def transaction_pooling_warnings(databases: dict[str, dict]) -> list[checks.Warning]:
    """Warn about each PostgreSQL database that is configured for a transaction-pooling proxy.

    Django requires DISABLE_SERVER_SIDE_CURSORS behind such a proxy, such as PgBouncer with
    pool_mode = transaction (Django's databases reference, "Transaction pooling and server-side
    cursors"). Job locks and ingest journals use session-level advisory locks, and such a proxy
    runs each transaction on any server session. So a lock can stay with a session that
    another client gets next, or be released on the wrong one.
    """
    warnings = []
    for alias, database in databases.items():
        if "postgresql" in database.get("ENGINE", "") and database.get("DISABLE_SERVER_SIDE_CURSORS"):
            warnings.append(
                checks.Warning(
                    f"DATABASES[{alias!r}] sets DISABLE_SERVER_SIDE_CURSORS, as for a transaction-pooling proxy "
                    "such as PgBouncer in transaction mode. Job locks and the sweep of killed ingest runs rely on "
                    "PostgreSQL session-level advisory locks, which do not work through such a proxy: two jobs "
                    "could change the same objects at once, and a sweep could delete files of a running ingest.",
                    hint="Connect to PostgreSQL directly or through session pooling (PgBouncer pool_mode = session).",
                    id="aip.W001",
                )
            )
    return warnings
