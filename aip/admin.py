"""Read-only admin of packager jobs: what ran, who started it, how far it got and what it logged."""
from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html

from aip.models import Job


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
