"""Packager options (``-o name=value``): names, defaults and validation.

The names and defaults are DSpace's, so scripts written for ``dspace packager``
keep working. Unknown names and bad values raise ``InvalidOptionError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from aip.errors import InvalidOptionError

INGEST_OPTIONS = {
    "ignoreHandle", "ignoreParent", "skipIfParentMissing", "createMetadataFields", "dmd", "validate", "manifestOnly"
}
EXPORT_OPTIONS = {
    "passwords", "unauthorized", "updatedAfter", "filterBundles", "includeBundles", "validate", "manifestOnly"
}
UNAUTHORIZED_VALUES = ("skip", "zero")
DMD_TYPES = ("DIM", "MODS")
BOOLEAN_OPTIONS = {"ignoreHandle", "ignoreParent", "skipIfParentMissing", "createMetadataFields"}


def parse_option_pairs(pairs: list[str]) -> dict[str, str]:
    """Split ``name=value`` strings into a dict, rejecting malformed or repeated names."""
    options: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        name = name.strip()
        if not separator or not name:
            raise InvalidOptionError(f"Option {pair!r} is not of the form name=value (for example -o ignoreHandle=false).")
        if name in options:
            raise InvalidOptionError(f"Option {name!r} is given twice; give it once.")
        options[name] = value.strip()
    return options


def _check_names(options: dict[str, str], allowed: set[str], side: str) -> None:
    for name in options:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidOptionError(f"Unknown {side} option {name!r}. Known {side} options: {known}.")


def _boolean(options: dict[str, str], name: str, default: bool) -> bool:
    if name not in options:
        return default
    value = options[name].lower()
    if value not in ("true", "false"):
        raise InvalidOptionError(f"Option {name} must be true or false, not {options[name]!r}.")
    return value == "true"


@dataclass(frozen=True)
class IngestOptions:
    """Settings of one ingest run: mode, handle and parent sources, metadata registry use, dmdSec choice."""

    restore: bool = True
    keep_existing: bool = False
    replace: bool = False
    recursive: bool = False
    ignore_handle: bool = False
    ignore_parent: bool = False
    skip_if_parent_missing: bool = False
    create_metadata_fields: bool = True
    preferred_dmd: str | None = None
    validate: bool = False
    # Submitted items enter their collection's approval workflow unless -w turns it off.
    use_workflow: bool = True
    # Read packages as manifest-only METS files; packages named *.xml are read that way anyway.
    manifest_only: bool = False
    # The item packages that collections list are reported in ``IngestReport.deferred_items``, not
    # ingested, so that the part jobs of a split restore can ingest them.
    defer_items: bool = False
    # New metadata fields and bitstream formats are committed at once, apart from the run's transaction, so
    # that part jobs of a split restore that add the same field do not wait for each other (see ``registry_rows``).
    commit_registries_apart: bool = False


def ingest_options(
    raw: dict[str, str],
    *,
    restore: bool,
    keep_existing: bool = False,
    replace: bool = False,
    recursive: bool = False,
    use_workflow: bool = True,
) -> IngestOptions:
    """Return validated ingest options; submit mode defaults ignoreHandle and ignoreParent to true."""
    _check_names(raw, INGEST_OPTIONS, "ingest")
    if keep_existing and replace:
        raise InvalidOptionError("-k (keep existing) and -f (force replace) cannot be combined; choose one.")
    dmd = raw.get("dmd") or None
    if dmd is not None and dmd.upper() not in DMD_TYPES:
        raise InvalidOptionError(f"Option dmd must be one of {', '.join(DMD_TYPES)}, not {dmd!r}.")
    return IngestOptions(
        restore=restore,
        keep_existing=keep_existing,
        replace=replace,
        recursive=recursive,
        ignore_handle=_boolean(raw, "ignoreHandle", not restore),
        ignore_parent=_boolean(raw, "ignoreParent", not restore),
        skip_if_parent_missing=_boolean(raw, "skipIfParentMissing", False),
        create_metadata_fields=_boolean(raw, "createMetadataFields", True),
        preferred_dmd=dmd,
        validate=_boolean(raw, "validate", False),
        manifest_only=_boolean(raw, "manifestOnly", False),
        use_workflow=use_workflow,
    )


@dataclass(frozen=True)
class ExportOptions:
    """Settings of one export run: descendants, password hashes, unreadable files, item and bundle filters."""

    recursive: bool = False
    include_passwords: bool = False
    unauthorized: str | None = None  # None (fail), "skip" or "zero"
    # Only items modified strictly after this moment are exported; containers always are.
    updated_after: datetime | None = None
    # Only items whose package changed here strictly after this moment (Item.changed_at) are
    # exported; incremental backups set it, and no -o option does.
    changed_after: datetime | None = None
    # Bundle names to leave out, or (with ``only_bundles``) the only ones to keep.
    bundle_names: frozenset[str] = frozenset()
    only_bundles: bool = False
    # Validation needs AIP_SCHEMA_DIR; when it is unset, only an explicit validate=true fails the export.
    validate: bool = True
    manifest_only: bool = False

    @property
    def extension(self) -> str:
        return "xml" if self.manifest_only else "zip"

    def includes_bundle(self, name: str) -> bool:
        if not self.bundle_names:
            return True
        return (name in self.bundle_names) == self.only_bundles


def export_options(raw: dict[str, str], *, recursive: bool) -> ExportOptions:
    """Return validated export options.

    Unlike DSpace, which exports password hashes whenever the option is present,
    only ``passwords=true`` does, so ``passwords=false`` leaves them out.
    """
    _check_names(raw, EXPORT_OPTIONS, "export")
    unauthorized = raw.get("unauthorized") or None
    if unauthorized is not None and unauthorized not in UNAUTHORIZED_VALUES:
        raise InvalidOptionError(f"Option unauthorized must be skip or zero, not {raw['unauthorized']!r}.")
    bundle_names, only_bundles = _bundle_filter(raw)
    return ExportOptions(
        recursive=recursive,
        include_passwords=_boolean(raw, "passwords", False),
        unauthorized=unauthorized,
        updated_after=_moment(raw, "updatedAfter"),
        bundle_names=bundle_names,
        only_bundles=only_bundles,
        validate=_validate_export(raw),
        manifest_only=_boolean(raw, "manifestOnly", False),
    )


def _validate_export(options: dict[str, str]) -> bool:
    """Return whether exports validate; an explicit validate=true needs the schema folder."""
    validate = _boolean(options, "validate", True)
    if validate and "validate" in options:
        from aip.mets.validation import schema_dir_or_error

        schema_dir_or_error()
    return validate


def _moment(options: dict[str, str], name: str) -> datetime | None:
    """Parse an ISO-8601 date or date and time; one without a zone is taken as UTC."""
    if name not in options:
        return None
    try:
        moment = datetime.fromisoformat(options[name].replace("Z", "+00:00"))
    except ValueError:
        raise InvalidOptionError(
            f"Option {name} must be an ISO-8601 date or date and time (2024-05-01 or 2024-05-01T12:00:00Z), "
            f"not {options[name]!r}."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _bundle_filter(options: dict[str, str]) -> tuple[frozenset[str], bool]:
    """Return the bundle names of filterBundles or includeBundles, and whether they are the only ones kept."""
    if "filterBundles" in options and "includeBundles" in options:
        raise InvalidOptionError(
            "filterBundles and includeBundles cannot be combined; use filterBundles=A,B to leave bundles out, "
            "or includeBundles=A,B (or filterBundles=+A,B) to keep only those."
        )
    if "includeBundles" in options:
        text, only = options["includeBundles"], True
    elif "filterBundles" in options:
        text = options["filterBundles"]
        only = text.startswith("+")
        text = text.removeprefix("+")
    else:
        return frozenset(), False
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise InvalidOptionError("filterBundles and includeBundles need a comma-separated list of bundle names.")
    if only and names == {"all"}:
        return frozenset(), False
    return names, only
