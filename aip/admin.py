"""Admin of packager jobs: the job list with live progress, and the pages that start, retry, cancel and download them.

Jobs are never edited here: each page parses its form and calls one job service
(``job_create`` and ``job_enqueue``, ``job_retry``, ``job_cancel``). Who may do
what follows the permissions of ``Job``: export_aip (exports and site backups),
restore_aip (submit and restore), replace_aip, verify_aip and download_aip.
Every action is recorded as a LogEntry and in the ``aip`` log, with the user.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from aip import selectors
from aip.admin_readonly import ReadOnlyAdminMixin
from aip.admin_views import (
    JOB_PERMISSIONS,
    eperson_email,
    export_page,
    job_logged,
    job_outcome_report,
    job_progress,
    log_tail,
    may_run,
    progress_ids,
    progress_text,
    replace_summary,
    replace_target,
    replace_upload_discard,
    replace_upload_token,
    restore_parent_check,
    stored_manifest,
    stored_packages,
    upload_store,
)
from aip.errors import AipError
from aip.forms import AIP_STORAGE, RestoreForm, VerifyForm
from aip.models import Job, JobEvent
from aip.services.jobs import job_cancel, job_create, job_enqueue, job_retry
from aip.storage import aip_storage, storage_delete_folder, storage_files

logger = logging.getLogger(__name__)

# Job kind of each mode of the restore page.
RESTORE_KINDS = {
    RestoreForm.MODE_SUBMIT: Job.Kind.SUBMIT,
    RestoreForm.MODE_RESTORE: Job.Kind.RESTORE,
    RestoreForm.MODE_KEEP: Job.Kind.RESTORE,
    RestoreForm.MODE_REPLACE: Job.Kind.REPLACE,
}
# Most result files the page of an export job lists for download.
RESULT_FILES_SHOWN = 500


# Most audit events the page of one job lists; the JobEvent list, filtered by the job, shows them all.
EVENTS_SHOWN = 500


class _FirstEventsFormSet(admin.options.BaseInlineFormSet):
    def get_queryset(self):
        return super().get_queryset()[:EVENTS_SHOWN]


class JobEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The audit trail of one job, read-only, under its log."""
    view_permission = "aip.view_job"

    model = JobEvent
    formset = _FirstEventsFormSet
    fields = ("at", "action", "object_type", "handle", "uuid", "package", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = f"Audit trail (first {EVENTS_SHOWN} events)"


@admin.register(Job)
class JobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id", "kind", "state_label", "progress", "eperson_email", "user", "target", "started_at", "finished_at"
    )
    list_filter = ("state", "kind")
    search_fields = ("handle", "path", "eperson_email", "rq_job_id")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("kind", "state_label", "error", "storage", "result_path", "eperson_email", "user",
                           "retry_of", "cancel_requested")}),
        ("Arguments", {"fields": ("handle", "parent_handle", "path", "options", "recursive", "keep_existing",
                                  "use_workflow")}),
        ("Split job", {"fields": ("part_count", "parent", "parts_list", "item_count")}),
        ("Progress", {"fields": ("progress", "created_at", "started_at", "finished_at", "heartbeat_at",
                                 "worker_name", "rq_job_id")}),
        ("Log", {"fields": ("log_text", "events_link")}),
    )
    inlines = (JobEventInline,)
    actions = ("retry_jobs", "cancel_jobs")
    change_list_template = "admin/aip/job/jobs_change_list.html"
    change_form_template = "admin/aip/job/jobs_change_form.html"

    class Media:
        js = ("aip/job_progress.js",)
        css = {"all": ("aip/jobs.css",)}

    # --- permissions ---------------------------------------------------------------------------

    def has_run_permission(self, request) -> bool:
        """Tell whether the user may start any kind of job; retry and cancel then check the kind of each job."""
        return any(request.user.has_perm(permission) for permission in set(JOB_PERMISSIONS.values()))

    def get_readonly_fields(self, request, obj=None):
        return [field for fields in (options["fields"] for _, options in self.fieldsets) for field in fields]

    # --- URLs and pages ------------------------------------------------------------------------

    def get_urls(self):
        def view(function, name: str):
            return self.admin_site.admin_view(function), name

        pages = [
            ("verify/", *view(self.verify_view, "aip_job_verify")),
            ("restore/", *view(self.restore_view, "aip_job_restore")),
            ("backup/", *view(self.backup_view, "aip_job_backup")),
            ("progress/", *view(self.progress_list_view, "aip_job_progress_list")),
            ("<int:object_id>/progress/", *view(self.progress_view, "aip_job_progress")),
            ("<int:object_id>/retry/", *view(self.retry_view, "aip_job_retry")),
            ("<int:object_id>/cancel/", *view(self.cancel_view, "aip_job_cancel")),
            ("<int:object_id>/download/", *view(self.download_view, "aip_job_download")),
        ]
        return [path(route, function, name=name) for route, function, name in pages] + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        user = request.user
        context = {
            "can_backup": user.has_perm("aip.export_aip"),
            "can_restore": bool(self._restore_modes(request)),
            "can_verify": user.has_perm("aip.verify_aip"),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, unquote(object_id))
        context = {**(self._job_tools(request, job) if job else {}), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _job_tools(self, request, job: Job) -> dict:
        """Return which buttons the page of ``job`` shows to this user, and its result files."""
        allowed = may_run(request.user, job.kind)
        can_download = request.user.has_perm("aip.download_aip") and self._has_result(job)
        return {
            "can_retry": allowed and job.state in (Job.State.FAILED, Job.State.CANCELLED),
            "can_cancel": allowed and not job.is_finished,
            "can_download": can_download,
            "result_name": PurePosixPath(job.result_path).name if can_download else "",
            "result_files": self._result_files(request, job) if can_download and job.recursive else [],
        }

    def verify_view(self, request):
        """Queue a verify job for a package on the server, an uploaded one, or one in the AIP storage."""
        if not request.user.has_perm("aip.verify_aip"):
            raise PermissionDenied
        storage, names = self._storage_and_packages(request)
        if request.method == "POST":
            form = VerifyForm(request.POST, request.FILES, package_names=names)
        else:
            form = VerifyForm(package_names=names)
        if form.is_bound and form.is_valid():
            job = self._verify_queue(request, form.cleaned_data)
            if job is not None:
                return HttpResponseRedirect(reverse("admin:aip_job_change", args=[job.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Verify AIP", "opts": self.opts}
        return TemplateResponse(request, "admin/aip/job/verify.html", context)

    def _verify_queue(self, request, data: dict) -> Job | None:
        if data["stored"]:
            package, storage = data["stored"], AIP_STORAGE
        else:
            package, storage = data["path"] or _saved_upload(data["upload"]), ""
        try:
            job = job_create(
                kind=Job.Kind.VERIFY,
                eperson_email=eperson_email(request),
                path=package,
                options={"validate": "true" if data["validate"] else "false"},
                recursive=data["recursive"],
                user=request.user,
                storage=storage,
            )
            job = job_enqueue(job)
        except AipError as error:
            logger.warning("verify job for %s rejected for user %s: %s", package, request.user.get_username(), error)
            self.message_user(request, str(error), messages.ERROR)
            return None
        job_logged(self, request, job, f"Queued verify of {package}", added=True)
        job_outcome_report(self, request, job, subject=PurePosixPath(package).name)
        return job

    def backup_view(self, request):
        """Show the export options of a backup of the whole site (-a), and queue it when they are posted."""
        if not request.user.has_perm("aip.export_aip"):
            raise PermissionDenied
        return export_page(
            self, request, objects=[selectors.site_get()], recursive=True, title="Back up the whole site"
        )

    def restore_view(self, request):
        """Queue a submit, restore or replace job for an uploaded package or one in the AIP storage.

        A replace first shows what it will overwrite, and only the confirming post queues it.
        """
        modes = self._restore_modes(request)
        if not modes:
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("mode") in RESTORE_KINDS and request.POST["mode"] not in modes:
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("back"):
            return self._replace_back(request)
        storage, names = self._storage_and_packages(request)
        if request.method == "POST":
            form = RestoreForm(request.POST, request.FILES, package_names=names, modes=modes)
        else:
            form = RestoreForm(package_names=names, modes=modes)
        if form.is_bound and form.is_valid() and storage is not None:
            response = self._restore_submit(request, form, storage)
            if response is not None:
                return response
        context = {
            **self.admin_site.each_context(request), "form": form, "title": "Restore from AIP", "opts": self.opts
        }
        return TemplateResponse(request, "admin/aip/job/restore.html", context)

    def _restore_submit(self, request, form: RestoreForm, storage):
        """Check the package against the form, then show the replace confirmation or queue the job."""
        try:
            email = eperson_email(request)
        except AipError as error:
            form.add_error(None, str(error))
            return None
        upload = form.cleaned_data["upload"]
        try:
            name = upload_store(storage, upload) if upload else form.cleaned_data["stored"]
        except AipError as error:
            form.add_error("upload", str(error))
            return None
        try:
            manifest = stored_manifest(storage, name)
            restore_parent_check(form, manifest, name)
        except AipError as error:
            if upload:
                _upload_remove(storage, name)
            form.add_error("upload" if upload else "stored", _package_error(upload.name if upload else name, error))
            return None
        if form.cleaned_data["mode"] == RestoreForm.MODE_REPLACE and request.POST.get("confirm") != "yes":
            return self._replace_confirm(request, form, name, manifest, uploaded=bool(upload))
        return self._restore_queue(request, form, name, email, manifest)

    def _replace_confirm(self, request, form: RestoreForm, name: str, manifest, *, uploaded: bool):
        target = replace_target(manifest)
        hidden = [
            (key, value)
            for key, values in form.data.lists()
            if key not in ("csrfmiddlewaretoken", "stored", "upload", "confirm", "back", "upload_token")
            for value in values
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Replace from {name}?",
            "opts": self.opts,
            "package": name,
            "manifest": manifest,
            "summary": replace_summary(target) if target is not None else None,
            "recursive": form.cleaned_data["recursive"],
            "hidden": [*hidden, ("stored", name), ("confirm", "yes")],
            "upload_token": replace_upload_token(name) if uploaded else "",
        }
        return TemplateResponse(request, "admin/aip/job/replace_confirm.html", context)

    def _replace_back(self, request):
        """Leave a replace confirmation: delete the package uploaded for it, then show an empty restore page."""
        try:
            name = replace_upload_discard(aip_storage(AIP_STORAGE), request.POST.get("upload_token", ""))
        except AipError as error:
            logger.error("deleting the upload of a replace confirmation for user %s failed: %s",
                         request.user.get_username(), error)
            self.message_user(request, f"Nothing was replaced, but the uploaded package remains: {error}",
                              messages.WARNING)
            return HttpResponseRedirect(reverse("admin:aip_job_restore"))
        if name:
            logger.info("user %s went back from a replace; deleted the upload %s", request.user.get_username(), name)
            self.message_user(request, f"Nothing was replaced; the uploaded package {name} was deleted.",
                              messages.INFO)
        return HttpResponseRedirect(reverse("admin:aip_job_restore"))

    def _restore_queue(self, request, form: RestoreForm, name: str, email: str, manifest):
        data = form.cleaned_data
        # A replace records the object it overwrites, as ``packager -r -f -i HANDLE`` does.
        target = replace_target(manifest) if data["mode"] == RestoreForm.MODE_REPLACE else None
        try:
            job = job_create(
                kind=RESTORE_KINDS[data["mode"]],
                eperson_email=email,
                path=name,
                handle=target.handle_string or "" if target is not None else "",
                parent_handle=data["parent_handle"],
                options=form.options(),
                recursive=data["recursive"],
                keep_existing=data["mode"] == RestoreForm.MODE_KEEP,
                use_workflow=form.workflow_wanted(),
                user=request.user,
                storage=AIP_STORAGE,
                part_count=form.part_count(),
            )
            job = job_enqueue(job)
        except AipError as error:
            logger.warning(
                "%s job for %s rejected for user %s: %s", data["mode"], name, request.user.get_username(), error
            )
            form.add_error(None, str(error))
            return None
        job_logged(self, request, job, f"Queued {job.get_kind_display().lower()} of {name}", added=True)
        job_outcome_report(self, request, job, subject=name)
        return HttpResponseRedirect(reverse("admin:aip_job_change", args=[job.pk]))

    def _restore_modes(self, request) -> list[str]:
        modes = []
        if request.user.has_perm("aip.restore_aip"):
            modes += [RestoreForm.MODE_SUBMIT, RestoreForm.MODE_RESTORE, RestoreForm.MODE_KEEP]
        if request.user.has_perm("aip.replace_aip"):
            modes.append(RestoreForm.MODE_REPLACE)
        return modes

    def _storage_and_packages(self, request):
        """Return the AIP storage and its .zip names; on a storage failure show it and return (None, [])."""
        try:
            storage = aip_storage(AIP_STORAGE)
            return storage, stored_packages(storage)
        except AipError as error:
            logger.error("listing the AIP storage for user %s failed: %s", request.user.get_username(), error)
            self.message_user(request, str(error), messages.ERROR)
            return None, []

    # --- job endpoints -------------------------------------------------------------------------

    def progress_view(self, request, object_id: int):
        """Return the state, progress and end of the log of one job as JSON."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(Job, pk=object_id)
        return JsonResponse({**job_progress(job), "log": log_tail(job.log)})

    def progress_list_view(self, request):
        """Return the state and progress of the jobs named by ``?id=`` as JSON, for the job list."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            ids = progress_ids(request.GET.getlist("id"))
        except ValueError as error:
            return JsonResponse({"error": f"Invalid job ids: {error}. Give up to 200 numeric ?id= values."}, status=400)
        jobs = Job.objects.filter(pk__in=ids).order_by("pk")
        return JsonResponse({"jobs": [job_progress(job) for job in jobs]})

    def retry_view(self, request, object_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = get_object_or_404(Job, pk=object_id)
        if not may_run(request.user, job.kind):
            raise PermissionDenied
        retry = self._retry(request, job)
        target = retry or job
        return HttpResponseRedirect(reverse("admin:aip_job_change", args=[target.pk]))

    def cancel_view(self, request, object_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = get_object_or_404(Job, pk=object_id)
        if not may_run(request.user, job.kind):
            raise PermissionDenied
        self._cancel(request, job)
        return HttpResponseRedirect(reverse("admin:aip_job_change", args=[job.pk]))

    def download_view(self, request, object_id: int):
        """Stream the package an export wrote (or, with ``?file=``, another file of its folder) from storage."""
        if not request.user.has_perm("aip.download_aip"):
            raise PermissionDenied
        job = get_object_or_404(Job, pk=object_id)
        if not self._has_result(job):
            raise Http404(f"Job {job.pk} has no package in a storage to download.")
        name = request.GET.get("file") or job.result_path
        if PurePosixPath(name).parent != PurePosixPath(job.result_path).parent or ".." in PurePosixPath(name).parts:
            raise Http404(f"{name!r} is not a file written by job {job.pk}.")
        try:
            # django-storages' S3File spools the object to a temporary file first; the "aips" S3 settings
            # set max_memory_size, so a large AIP goes to disk, not memory.
            stream = aip_storage(job.storage).open(name, "rb")
        except (AipError, OSError) as error:
            logger.warning("download of %s of job %s failed: %s", name, job.pk, error)
            raise Http404(f"{name!r} cannot be read from storage {job.storage!r}: {error}") from None
        job_logged(self, request, job, f"Downloaded {name}", added=False)
        return FileResponse(stream, as_attachment=True, filename=PurePosixPath(name).name)

    def _has_result(self, job: Job) -> bool:
        return job.state == Job.State.SUCCEEDED and bool(job.result_path) and bool(job.storage)

    def _result_files(self, request, job: Job) -> list[dict[str, str]]:
        folder = str(PurePosixPath(job.result_path).parent)
        try:
            names = storage_files(aip_storage(job.storage), "" if folder == "." else folder)
        except AipError as error:
            self.message_user(request, str(error), messages.WARNING)
            return []
        return [{"name": PurePosixPath(name).name, "path": name} for name in names[:RESULT_FILES_SHOWN]]

    def _retry(self, request, job: Job) -> Job | None:
        try:
            retry = job_retry(job, user=request.user)
        except AipError as error:
            logger.warning("retry of job %s by user %s rejected: %s", job.pk, request.user.get_username(), error)
            self.message_user(request, str(error), messages.ERROR)
            return None
        job_logged(self, request, retry, f"Queued as a retry of job {job.pk}", added=True)
        job_outcome_report(self, request, retry)
        return retry

    def _cancel(self, request, job: Job) -> None:
        try:
            job = job_cancel(job, user=request.user)
        except AipError as error:
            logger.warning("cancel of job %s by user %s rejected: %s", job.pk, request.user.get_username(), error)
            self.message_user(request, str(error), messages.ERROR)
            return
        if job.state == Job.State.CANCELLED:
            outcome = "Cancelled before it started"
        else:
            outcome = "Cancel requested; the job stops at its next progress report"
        job_logged(self, request, job, outcome, added=False)
        self.message_user(request, f"Job {job.pk}: {outcome.lower()}.", messages.SUCCESS)

    # --- actions -------------------------------------------------------------------------------

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["run"])
    def retry_jobs(self, request, queryset) -> None:
        for job in queryset:
            if may_run(request.user, job.kind):
                self._retry(request, job)
            else:
                self.message_user(request, _not_permitted(job), messages.ERROR)

    @admin.action(description="Cancel selected queued or running jobs", permissions=["run"])
    def cancel_jobs(self, request, queryset) -> None:
        for job in queryset:
            if may_run(request.user, job.kind):
                self._cancel(request, job)
            else:
                self.message_user(request, _not_permitted(job), messages.ERROR)

    # --- columns -------------------------------------------------------------------------------

    @admin.display(description="object")
    def target(self, job: Job) -> str:
        return job.handle or job.path

    @admin.display(description="state", ordering="state")
    def state_label(self, job: Job) -> str:
        return format_html('<span data-aip-state="{}">{}</span>', job.pk, job.get_state_display())

    @admin.display(description="progress")
    def progress(self, job: Job) -> str:
        # Without a total the bar has no value, which browsers draw as "size not known".
        value = format_html(' value="{}"', job.objects_done) if job.objects_total is not None else ""
        return format_html(
            '<span class="aip-progress" data-job-id="{}" data-finished="{}" data-url="{}">'
            '<progress max="{}"{}></progress> <span class="aip-progress-text">{}</span></span>',
            job.pk,
            "1" if job.is_finished else "0",
            reverse("admin:aip_job_progress_list"),
            max(job.objects_total or 0, 1),
            value,
            progress_text(job),
        )

    @admin.display(description="part jobs")
    def parts_list(self, job: Job) -> str:
        parts = list(job.parts.order_by("pk").values_list("pk", "state"))
        if not parts:
            return "-"
        links = [
            format_html('<a href="{}">{}</a> ({})', reverse("admin:aip_job_change", args=[pk]), pk, state)
            for pk, state in parts
        ]
        return format_html_join(", ", "{}", ((link,) for link in links))

    @admin.display(description="items of this part")
    def item_count(self, job: Job) -> str:
        return str(len(job.batch)) if job.parent_id else "-"

    @admin.display(description="log")
    def events_link(self, job: Job) -> str:
        count = job.events.count()
        url = reverse("admin:aip_jobevent_changelist") + f"?job__id__exact={job.pk}"
        return format_html('<a href="{}">{} event(s)</a>', url, count)

    events_link.short_description = "audit trail"

    def log_text(self, job: Job) -> str:
        return format_html(
            '<pre class="aip-log" data-url="{}" style="white-space: pre-wrap">{}</pre>',
            reverse("admin:aip_job_progress", args=[job.pk]),
            job.log or "(empty)",
        )


def _upload_remove(storage, name: str) -> None:
    """Remove a rejected upload and its folder; a failure is logged, so the form shows the first error."""
    try:
        storage_delete_folder(storage, str(PurePosixPath(name).parent))
    except AipError as error:
        logger.error("removing the rejected upload %s failed: %s", name, error)


def _package_error(name: str, error: AipError) -> str:
    return f"{name!r} cannot be used: {error}"


def _not_permitted(job: Job) -> str:
    return f"Job {job.pk}: you may not retry or cancel {job.get_kind_display().lower()} jobs."


def _saved_upload(upload) -> str:
    """Store an uploaded package under VAR_DIR/uploads and return its path."""
    folder = Path(settings.VAR_DIR) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".xml" if upload.name.lower().endswith(".xml") else ".zip"
    with tempfile.NamedTemporaryFile(dir=folder, prefix="verify-", suffix=suffix, delete=False) as target:
        for chunk in upload.chunks():
            target.write(chunk)
    return target.name


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every job's audit trail in one list: who did what to which object, when, and how it ended."""
    view_permission = "aip.view_job"

    list_display = ("at", "job_link", "action", "actor", "object_type", "handle", "uuid", "package", "detail")
    list_filter = ("action", "object_type", "job__kind")
    search_fields = ("handle", "uuid", "package", "actor", "detail")
    list_select_related = ("job",)
    date_hierarchy = "at"
    fields = ("job_link", "at", "action", "actor", "object_type", "handle", "uuid", "package", "detail")
    readonly_fields = fields

    @admin.display(description="job", ordering="job")
    def job_link(self, event: JobEvent) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:aip_job_change", args=[event.job_id]), event.job_id
        )


from aip import admin_backups  # noqa: E402,F401  (registers the backup admin)
