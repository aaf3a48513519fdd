"""Helpers of the admin pages that queue AIP jobs: permissions, storage, export and replace previews.

The admin classes in ``aip/admin.py`` and ``repository/admin.py`` parse requests
and call these helpers; the jobs themselves run ``aip.services.jobs``.
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core import signing
from django.db.models import Count, Q, Sum
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from aip import selectors
from aip.errors import AipError
from aip.forms import AIP_STORAGE, ExportForm
from aip.mets.model import PackageManifest
from aip.mets.reader import read_manifest
from aip.models import Job
from aip.package import package_open
from aip.services.jobs import job_create, job_enqueue
from aip.services.ingest import PARENT_TYPES
from aip.storage import staged_read, staged_write, storage_delete_folder, storage_files
from repository.models import Bitstream, Collection, Community, Item, Site

logger = logging.getLogger(__name__)

# Permission that starts, retries and cancels each kind of job.
JOB_PERMISSIONS = {
    Job.Kind.EXPORT: "aip.export_aip",
    Job.Kind.BACKUP: "aip.export_aip",
    Job.Kind.SUBMIT: "aip.restore_aip",
    Job.Kind.RESTORE: "aip.restore_aip",
    Job.Kind.REPLACE: "aip.replace_aip",
    Job.Kind.VERIFY: "aip.verify_aip",
}
# Timestamp of the folders that exports and uploads go into, in UTC.
FOLDER_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# Most progress rows one request of the jobs list may ask for.
PROGRESS_IDS_MAX = 200
# Most characters of a job's log the progress endpoint returns: the end of the log.
LOG_TAIL_CHARACTERS = 256 * 1024
# Characters that an uploaded file name loses: all but those of DSpace's package names (ITEM@123456789-13.zip).
UPLOAD_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")
# Folder of the "aips" storage that uploads go into; only files there are deleted on "No, go back".
UPLOADS_FOLDER = "uploads"
# Signing salt of the token that lets "No, go back" delete the upload of its replace confirmation.
REPLACE_UPLOAD_SALT = "aip.replace-confirm-upload"
# Seconds after which that token no longer deletes anything.
REPLACE_UPLOAD_MAX_AGE = 24 * 3600


def may_run(user, kind: str) -> bool:
    """Tell whether ``user`` may start, retry and cancel jobs of ``kind``."""
    return user.has_perm(JOB_PERMISSIONS[kind])


def eperson_email(request) -> str:
    """Return the email of the EPerson linked to the logged-in user, which jobs run as (-e)."""
    eperson = getattr(request.user, "eperson", None)
    if eperson is None or not eperson.email:
        raise AipError(
            f"User {request.user.get_username()} is not linked to an EPerson, so AIP jobs cannot run as them. "
            "Link an administrator EPerson to the user on its EPerson page."
        )
    return eperson.email


def folder_stamp(now: datetime | None = None) -> str:
    return (now or timezone.now()).astimezone(dt_timezone.utc).strftime(FOLDER_TIME_FORMAT)


def job_outcome_message(job: Job, *, subject: str = "") -> tuple[str, int]:
    """Return the message, and its level, that tells the user what happened to the job just enqueued.

    Without REDIS_URL ``job_enqueue`` has already run the job in this request, so the message gives
    its outcome; with it the job is only queued. ``subject`` names the package or object, when useful.
    """
    label = f"{job.get_kind_display()} job {job.pk}"
    if job.retry_of_id:
        label += f" (retry of job {job.retry_of_id})"
    about = f" for {subject}" if subject else ""
    if settings.REDIS_URL:
        return f"{label} queued{about}.", messages.SUCCESS
    ran = f"{label}{about} ran in this request (REDIS_URL is not set) and"
    if job.state == Job.State.SUCCEEDED:
        result = f": {job.result_path}" if job.result_path else "."
        return f"{ran} succeeded{result}", messages.SUCCESS
    if job.state == Job.State.FAILED:
        return f"{ran} failed: {job.error}", messages.ERROR
    return f"{ran} ended {job.get_state_display().lower()}.", messages.WARNING


def job_outcome_report(modeladmin, request, job: Job, *, subject: str = "") -> None:
    text, level = job_outcome_message(job, subject=subject)
    modeladmin.message_user(request, text, level)


def job_logged(modeladmin, request, job: Job, message: str, *, added: bool) -> None:
    """Record an admin action on ``job`` as a LogEntry and in the ``aip`` log, both with the user."""
    if added:
        modeladmin.log_addition(request, job, message)
    else:
        modeladmin.log_change(request, job, message)
    logger.info("user %s: %s (job %s)", request.user.get_username(), message, job.pk)


# --- progress -----------------------------------------------------------------------------------


def progress_text(job: Job) -> str:
    total = f" / {job.objects_total}" if job.objects_total is not None else ""
    return f"{job.objects_done}{total} objects, {filesizeformat(job.bytes_done)}"


def job_progress(job: Job) -> dict:
    """Return the state and progress of ``job`` as the progress endpoints send them."""
    percent = None
    if job.objects_total:
        percent = min(100, round(100 * job.objects_done / job.objects_total))
    return {
        "id": job.pk,
        "state": job.state,
        "state_label": job.get_state_display(),
        "finished": job.is_finished,
        "cancel_requested": job.cancel_requested,
        "objects_done": job.objects_done,
        "objects_total": job.objects_total,
        "bytes_done": job.bytes_done,
        "percent": percent,
        "text": progress_text(job),
        "error": job.error,
    }


def log_tail(log: str) -> str:
    if len(log) <= LOG_TAIL_CHARACTERS:
        return log
    tail = log[-LOG_TAIL_CHARACTERS:]
    return "(earlier lines left out)\n" + tail[tail.find("\n") + 1:]


def progress_ids(values: list[str]) -> list[int]:
    """Return the job ids of a progress request; raise ``ValueError`` for a value that is not an id."""
    ids = [int(value) for value in values]
    if len(ids) > PROGRESS_IDS_MAX:
        raise ValueError(f"at most {PROGRESS_IDS_MAX} job ids per request, not {len(ids)}")
    return ids


# --- packages in the AIP storage ------------------------------------------------------------------


def stored_packages(storage) -> list[str]:
    """Return the names of every .zip package in ``storage``, recursively, sorted."""
    # NOTE: the list is read on every page view; a storage with very many packages makes a long list.
    return [name for name in storage_files(storage, "") if name.lower().endswith(".zip")]


def upload_file_name(name: str) -> str:
    """Return the name under which an uploaded file is stored: its own name when that is safe.

    DSpace's package names (letters, digits, ".", "-", "_" and "@") are kept as they are. Any other
    character becomes "_", and the result never contains "/", "\\" or "..", nor starts with ".".
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = UPLOAD_NAME_UNSAFE.sub("_", base)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).lstrip(".")
    return cleaned or "package.zip"


def upload_store(storage, upload) -> str:
    """Store an uploaded package under ``uploads/<time>-<random>/`` in ``storage``; return its name.

    The upload is copied in chunks, and the file appears in the storage only complete.
    """
    name = upload_file_name(upload.name)
    folder = f"{UPLOADS_FOLDER}/{folder_stamp()}-{secrets.token_hex(3)}"
    with staged_write(storage, folder) as local:
        with open(local / name, "wb") as target:
            for chunk in upload.chunks():
                target.write(chunk)
    return f"{folder}/{name}"


def replace_upload_token(name: str) -> str:
    """Return a signed token that lets "No, go back" delete ``name``, the upload of a replace confirmation."""
    return signing.dumps(name, salt=REPLACE_UPLOAD_SALT)


def replace_upload_discard(storage, token: str) -> str:
    """Delete the upload that ``token`` names, with its folder; return its name, or "" when there is none.

    Only a token made by ``replace_upload_token`` deletes anything, so a package picked from the
    storage is never deleted. An invalid or expired token is logged and deletes nothing.
    """
    if not token:
        return ""
    try:
        name = signing.loads(token, salt=REPLACE_UPLOAD_SALT, max_age=REPLACE_UPLOAD_MAX_AGE)
    except signing.BadSignature as error:
        logger.warning("go back from a replace confirmation: ignored an invalid upload token (%s)", error)
        return ""
    folder = PurePosixPath(name).parent
    if folder.parent != PurePosixPath(UPLOADS_FOLDER):
        logger.warning("go back from a replace confirmation: %s is not an upload; nothing deleted", name)
        return ""
    storage_delete_folder(storage, str(folder))
    return name


def stored_manifest(storage, name: str) -> PackageManifest:
    """Read the manifest of the stored package ``name``; raise ``AipError`` naming it when it is not an AIP."""
    with staged_read(storage, name) as path, package_open(path) as reader:
        return read_manifest(reader.manifest_bytes(), source=PurePosixPath(name).name)


# --- export ---------------------------------------------------------------------------------------


def export_jobs_queue(
    modeladmin, request, *, objects: list, options: dict[str, str], recursive: bool, part_count: int = 0
) -> list[Job]:
    """Queue one export job per object into ``exports/<time>/`` of the AIP storage; report each in a message."""
    try:
        email = eperson_email(request)
    except AipError as error:
        modeladmin.message_user(request, str(error), messages.ERROR)
        return []
    folder = f"exports/{folder_stamp()}"
    extension = "xml" if options.get("manifestOnly") == "true" else "zip"
    jobs = []
    for obj in objects:
        name = f"{folder}/{selectors.package_file_name(obj, extension)}"
        try:
            job = job_create(
                kind=Job.Kind.EXPORT,
                eperson_email=email,
                handle=obj.handle_string or "",
                path=name,
                options=options,
                recursive=recursive,
                user=request.user,
                storage=AIP_STORAGE,
                part_count=part_count,
            )
            job = job_enqueue(job)
        except AipError as error:
            logger.warning("export of %s by user %s rejected: %s", obj, request.user.get_username(), error)
            modeladmin.message_user(request, f"{obj}: {error}", messages.ERROR)
            continue
        scope = " with all children" if recursive else ""
        job_logged(modeladmin, request, job, f"Queued export{scope} of {obj.handle_string} to {name}", added=True)
        jobs.append(job)
        if not settings.REDIS_URL:
            job_outcome_report(modeladmin, request, job, subject=obj.handle_string or str(obj))
    if jobs and settings.REDIS_URL:
        modeladmin.message_user(
            request, f"Queued {len(jobs)} export job(s) writing to {folder} in the \"{AIP_STORAGE}\" storage.",
            messages.SUCCESS,
        )
    return jobs


def export_page(modeladmin, request, *, objects: list, recursive: bool, title: str, action: str = ""):
    """Show the export options for ``objects``, or queue the exports when the options are posted.

    From an admin action (``action`` set) the page posts back to the action with the selected rows;
    a post carrying "apply" queues the jobs.
    """
    form = ExportForm(request.POST if "apply" in request.POST else None, recursive=recursive)
    if form.is_bound and form.is_valid():
        jobs = export_jobs_queue(
            modeladmin, request, objects=objects, options=form.options(), recursive=recursive,
            part_count=form.part_count(),
        )
        if jobs:
            return HttpResponseRedirect(reverse("admin:aip_job_changelist"))
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "objects": objects,
        "recursive": recursive,
        "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "select_across": request.POST.get("select_across", "0"),
    }
    return TemplateResponse(request, "admin/aip/export.html", context)


class ExportActionsMixin:
    """Admin actions "Export AIP" and "Export AIP with all children" for communities, collections and items."""

    actions = ("export_aip", "export_aip_recursive")

    def has_export_aip_permission(self, request) -> bool:
        return request.user.has_perm("aip.export_aip")

    @admin.action(description="Export AIP…", permissions=["export_aip"])
    def export_aip(self, request, queryset):
        return export_page(
            self, request, objects=list(queryset), recursive=False, title="Export AIP", action="export_aip"
        )

    @admin.action(description="Export AIP with all children…", permissions=["export_aip"])
    def export_aip_recursive(self, request, queryset):
        return export_page(
            self,
            request,
            objects=list(queryset),
            recursive=True,
            title="Export AIP with all children",
            action="export_aip_recursive",
        )


# --- restore checks -----------------------------------------------------------------------------


def restore_parent_check(form, manifest: PackageManifest, name: str) -> None:
    """Raise ``AipError`` when the top package's parent is missing or of a wrong type, as the ingest would."""
    if manifest.object_type == "SITE":
        return
    options = form.ingest_options()
    explicit = form.cleaned_data["parent_handle"]
    handle = manifest.parent_handle
    if explicit and (options.ignore_parent or not handle):
        handle = explicit
    if not handle:
        raise AipError(f"Package {name} names no parent; give a parent handle.")
    parent = selectors.object_by_handle(handle)
    if parent is None:
        if options.skip_if_parent_missing:
            return
        raise AipError(
            f"Its parent {handle!r} is not in this repository. Restore the parent first, give another parent "
            "handle with ignoreParent set to Yes, or tick skipIfParentMissing."
        )
    allowed = PARENT_TYPES.get(manifest.object_type, ())
    if not isinstance(parent, allowed):
        allowed_names = " or ".join(model.__name__.upper() for model in allowed)
        raise AipError(
            f"Its parent {handle!r} is of type {parent.object_type}, but {manifest.object_type} packages can only "
            f"be placed under {allowed_names}. Give a parent handle of type {allowed_names}, with ignoreParent "
            "set to Yes."
        )


# --- replace preview ------------------------------------------------------------------------------


@dataclass
class ReplaceSummary:
    """An existing object that a replace overwrites, and what lies below it."""

    obj: object
    title: str
    communities: int
    collections: int
    items: int
    bitstreams: int
    bytes: int


def replace_target(manifest: PackageManifest):
    """Return the existing object a replace of this package overwrites (by handle, else UUID), or None."""
    if manifest.handle:
        obj = selectors.object_by_handle(manifest.handle)
        if obj is not None:
            return obj
    models = {"SITE": Site, "COMMUNITY": Community, "COLLECTION": Collection, "ITEM": Item}
    model = models.get(manifest.object_type)
    if model is None or not manifest.uuid:
        return None
    return model.objects.filter(uuid=manifest.uuid).first()


def replace_summary(obj) -> ReplaceSummary:
    """Count the sub-communities, collections, items and bitstreams (with bytes) of ``obj`` and below."""
    communities = _communities_below(obj)
    if isinstance(obj, Site):
        collections = list(Collection.objects.values_list("pk", flat=True))
    elif isinstance(obj, Community):
        collections = list(Collection.objects.filter(community__in=[obj.pk, *communities]).values_list("pk", flat=True))
    elif isinstance(obj, Collection):
        collections = [obj.pk]
    else:
        collections = []
    if isinstance(obj, Item):
        items = Item.objects.filter(pk=obj.pk)
    else:
        items = Item.objects.filter(owning_collection__in=collections)

    own_community = [obj.pk] if isinstance(obj, Community) else []
    files = Bitstream.objects.filter(
        Q(bundle__item__in=items)
        | Q(community_logo__in=[*own_community, *communities])
        | Q(collection_logo__in=collections)
    ).distinct()
    totals = Bitstream.objects.filter(pk__in=files.values("pk")).aggregate(count=Count("pk"), size=Sum("size_bytes"))
    return ReplaceSummary(
        obj=obj,
        title=getattr(obj, "name", "") or str(obj),
        communities=len(communities),
        collections=len(collections) - (1 if isinstance(obj, Collection) else 0),
        items=items.count(),
        bitstreams=totals["count"] or 0,
        bytes=totals["size"] or 0,
    )


def _communities_below(obj) -> list[int]:
    """Return the ids of the communities below ``obj`` (every community for the site), one query per level."""
    if isinstance(obj, Site):
        return list(Community.objects.values_list("pk", flat=True))
    if not isinstance(obj, Community):
        return []
    found: list[int] = []
    level = [obj.pk]
    while level:
        level = list(Community.objects.filter(parent__in=level).values_list("pk", flat=True))
        found.extend(level)
    return found
