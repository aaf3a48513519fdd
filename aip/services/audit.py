"""The audit trail of jobs: ``JobEvent`` rows, and redaction of secrets from what jobs record.

Every job writes a "started" event, one event per object it exported, kept,
left out, copied, created, replaced or skipped, one per problem a verify found,
and an outcome event (succeeded, failed or cancelled, with the reason). Runners add
per-object events only for work that a failure does not undo: a failed ingest rolls
back and a failed storage export or backup removes its folder, so their trails show
only the start and the failure.

Every text a job stores or logs goes through ``redact`` first, so that password
hashes, the database password and storage credentials never reach Job.log,
Job.error, events or log files, whatever an error message contains.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from aip.models import Job, JobEvent

REDACTED = "[redacted]"
OBJECT_TYPES = ("SITE", "COMMUNITY", "COLLECTION", "ITEM")
# Password hashes as DSpace (hex SHA-384/512 digests) and Django ("algorithm$...$...") store them.
_HASH_PATTERNS = (
    re.compile(r"\b[0-9a-fA-F]{96,}\b"),
    re.compile(r"\b(?:pbkdf2_sha256|pbkdf2_sha1|argon2|bcrypt_sha256|bcrypt|scrypt|md5|sha1)\$[^\s'\"]+"),
    re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}"),
)
# The password part of a URL such as postgres://user:password@host/name.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s/]+@")
_PACKAGE_NAME = re.compile(r"^(?P<type>SITE|COMMUNITY|COLLECTION|ITEM)@(?P<handle>.+)\.(?:zip|xml)$")
_REPORT_ENTRY = re.compile(r"^(?P<type>SITE|COMMUNITY|COLLECTION|ITEM) (?P<target>\S+)(?: \((?P<reason>.*)\))?$")
_OTHER_ENTRY = re.compile(r"^(?P<package>\S+)(?: \((?P<reason>.*)\))?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def secrets_known() -> list[str]:
    """Return the credentials of this installation that must never be written anywhere."""
    candidates = [database.get("PASSWORD") for database in settings.DATABASES.values()]
    candidates += [os.environ.get(name) for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")]
    for entry in getattr(settings, "STORAGES", {}).values():
        options = entry.get("OPTIONS", {}) if isinstance(entry, dict) else {}
        candidates += [options.get(name) for name in ("access_key", "secret_key", "security_token")]
    # Secrets shorter than four characters would redact ordinary words.
    return sorted({str(secret) for secret in candidates if secret and len(str(secret)) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Return ``text`` without credentials, URL passwords and anything shaped like a password hash.

    ``secrets`` is ``secrets_known()`` read once by a caller that redacts many texts.
    """
    if not text:
        return text
    for secret in secrets_known() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda match: f"{match.group('scheme')}:{REDACTED}@", text)
    for pattern in _HASH_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


@dataclass
class EventDraft:
    """An event not saved yet: what a run did to one object."""

    action: str
    object_type: str = ""
    handle: str = ""
    uuid: str = ""
    package: str = ""
    detail: str = ""


def actor_of(job: Job) -> str:
    user = getattr(job, "user", None)
    return job.eperson_email + (f" (admin user {user.username})" if user is not None else "")


def event_record(job: Job, action: str, **fields) -> None:
    """Save one event of ``job`` now."""
    events_record(job, [EventDraft(action=action, **fields)])


# Columns of an event row, in the order events_record gives their values.
EVENT_FIELDS = ("job", "at", "action", "actor", "object_type", "handle", "uuid", "package", "detail")


def events_record(job: Job, drafts: list[EventDraft]) -> None:
    """Save ``drafts`` as events of ``job``, in order, with every text redacted.

    A backup job records an event for each of tens of thousands of copied packages. The
    rows skip the ORM: building and preparing a model instance per row took twice as long
    as the insert itself (0.47 s against 0.24 s for 10,000 events on PostgreSQL).
    """
    if not drafts:
        return
    at = JobEvent._meta.get_field("at").get_db_prep_value(timezone.now(), connection)
    actor = actor_of(job)[:254]
    secrets = secrets_known()
    rows = [
        (
            job.pk,
            at,
            draft.action,
            actor,
            draft.object_type[:16],
            draft.handle[:256],
            draft.uuid[:64],
            redact(draft.package, secrets)[:1024],
            redact(draft.detail, secrets),
        )
        for draft in drafts
    ]
    fields = [JobEvent._meta.get_field(name) for name in EVENT_FIELDS]
    table = connection.ops.quote_name(JobEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    # In autocommit, SQLite would commit (and sync to disk) each row of the executemany on its own.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement whatever the number of rows: each column goes as one array.
            arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays})", [list(column) for column in zip(*rows)]
            )
        else:
            placeholders = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)


def package_draft(action: str, name: str, detail: str = "") -> EventDraft:
    """Describe a package file by its DSpace name, such as COLLECTION@123456789-5.zip."""
    match = _PACKAGE_NAME.match(name)
    if match is None:
        return EventDraft(action=action, package=name, detail=detail)
    target = match.group("handle")
    if target.startswith("internal-id-"):
        return EventDraft(
            action=action, object_type=match.group("type"), uuid=target.removeprefix("internal-id-"),
            package=name, detail=detail,
        )
    # DSpace names replace the handle's "/" with "-"; the prefix never contains "-".
    prefix, _, suffix = target.partition("-")
    return EventDraft(
        action=action, object_type=match.group("type"), handle=f"{prefix}/{suffix}", package=name, detail=detail
    )


def report_drafts(action: str, entries: list[str]) -> list[EventDraft]:
    """Turn IngestReport entries ("COLLECTION 123456789/5 (reason)" or "name.zip (missing)") into events."""
    drafts = []
    for entry in entries:
        match = _REPORT_ENTRY.match(entry)
        if match is not None:
            target = match.group("target")
            is_uuid = bool(_UUID.match(target))
            drafts.append(EventDraft(
                action=action,
                object_type=match.group("type"),
                handle="" if is_uuid else target,
                uuid=target if is_uuid else "",
                detail=match.group("reason") or "",
            ))
            continue
        other = _OTHER_ENTRY.match(entry)
        package = other.group("package") if other else entry
        reason = (other.group("reason") if other else "") or ""
        drafts.append(EventDraft(action=action, package=package, detail=reason))
    return drafts
