"""Read-only admin of packager jobs: what ran, who started it, how far it got and what it logged."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from aip.errors import AipError
from aip.models import Job
from aip.services.jobs import job_create, job_enqueue

logger = logging.getLogger(__name__)


class VerifyForm(forms.Form):
    """A package to verify: a file on the server (for exported trees) or an uploaded zip."""

    path = forms.CharField(
        required=False, label="Package on the server", help_text="Full path of a .zip (or manifest-only .xml) package."
    )
    upload = forms.FileField(required=False, label="Or upload a package", help_text="A single .zip package.")
    recursive = forms.BooleanField(required=False, label="Also verify all child packages (-a)")
    validate = forms.BooleanField(required=False, label="Validate manifests against the schemas (AIP_SCHEMA_DIR)")

    def clean(self):
        data = super().clean()
        if bool(data.get("path")) == bool(data.get("upload")):
            raise forms.ValidationError("Give either a package path on the server or an uploaded package, not both.")
        return data


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "state", "progress", "eperson_email", "user", "target", "started_at", "finished_at")
    list_filter = ("state", "kind")
    search_fields = ("handle", "path", "eperson_email", "rq_job_id")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("kind", "state", "error", "result_path", "eperson_email", "user", "retry_of")}),
        ("Arguments", {"fields": ("handle", "parent_handle", "path", "options", "recursive", "keep_existing",
                                  "use_workflow")}),
        ("Progress", {"fields": ("progress", "created_at", "started_at", "finished_at", "heartbeat_at",
                                 "worker_name", "rq_job_id")}),
        ("Log", {"fields": ("log_text",)}),
    )

    def has_add_permission(self, request) -> bool:
        return False

    def get_urls(self):
        verify = path("verify/", self.admin_site.admin_view(self.verify_view), name="aip_job_verify")
        return [verify, *super().get_urls()]

    def verify_view(self, request):
        """Queue a verify job for a package on the server or an uploaded one, then show the job."""
        if not request.user.has_perm("aip.view_job"):
            raise PermissionDenied
        eperson = getattr(request.user, "eperson", None)
        form = VerifyForm(request.POST, request.FILES) if request.method == "POST" else VerifyForm()
        if form.is_bound and form.is_valid():
            if eperson is None or not eperson.email:
                self.message_user(request, "Your account has no EPerson; link one to run AIP jobs.", messages.ERROR)
            else:
                job = self._verify_queue(request, form.cleaned_data, eperson.email)
                if job is not None:
                    return HttpResponseRedirect(reverse("admin:aip_job_change", args=[job.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Verify AIP"}
        return TemplateResponse(request, "admin/aip/job/verify.html", context)

    def _verify_queue(self, request, data: dict, email: str) -> Job | None:
        package = data["path"] or _saved_upload(data["upload"])
        try:
            job = job_create(
                kind=Job.Kind.VERIFY,
                eperson_email=email,
                path=package,
                options={"validate": "true" if data["validate"] else "false"},
                recursive=data["recursive"],
                user=request.user,
            )
            job_enqueue(job)
        except AipError as error:
            logger.warning("verify job for %s rejected for %s: %s", package, email, error)
            self.message_user(request, str(error), messages.ERROR)
            return None
        self.message_user(request, f"Verify job {job.pk} queued for {Path(package).name}.", messages.SUCCESS)
        return job

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [field for fields in (options["fields"] for _, options in self.fieldsets) for field in fields]

    @admin.display(description="object")
    def target(self, job: Job) -> str:
        return job.handle or job.path

    @admin.display(description="progress")
    def progress(self, job: Job) -> str:
        total = f" / {job.objects_total}" if job.objects_total is not None else ""
        return f"{job.objects_done}{total} objects, {filesizeformat(job.bytes_done)}"

    @admin.display(description="log")
    def log_text(self, job: Job) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', job.log or "(empty)")


def _saved_upload(upload) -> str:
    """Store an uploaded package under VAR_DIR/uploads and return its path."""
    folder = Path(settings.VAR_DIR) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".xml" if upload.name.lower().endswith(".xml") else ".zip"
    with tempfile.NamedTemporaryFile(dir=folder, prefix="verify-", suffix=suffix, delete=False) as target:
        for chunk in upload.chunks():
            target.write(chunk)
    return target.name
