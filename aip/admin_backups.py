"""Admin of backup schedules (edited here, with a "Run now" action) and of their backups (read-only)."""
from __future__ import annotations

import logging

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from aip.admin_readonly import ReadOnlyAdminMixin
from aip.errors import AipError
from aip.models import Backup, BackupSchedule, FixityProblem, FixityRun
from aip.services.schedules import (
    backup_start,
    cron_validate,
    folder_validate,
    schedule_clean,
    schedule_save,
)

logger = logging.getLogger(__name__)

BACKUP_COLUMNS = (
    "folder_link",
    "state",
    "incremental",
    "snapshot_at",
    "finished_at",
    "packages",
    "packages_written",
    "packages_copied",
    "size",
)


class BackupScheduleForm(forms.ModelForm):
    """Schedule fields, each checked as the scheduler will use it, with a message naming the bad value."""

    class Meta:
        model = BackupSchedule
        fields = (
            "name", "enabled", "handle", "recursive", "include_passwords", "cron", "incremental", "storage", "folder",
            "keep",
            "eperson_email",
        )

    def clean_cron(self) -> str:
        return _as_validation_error(cron_validate, self.cleaned_data["cron"])

    def clean_folder(self) -> str:
        return _as_validation_error(folder_validate, self.cleaned_data["folder"])

    def clean(self):
        data = super().clean()
        candidate = BackupSchedule(**{name: data[name] for name in self.Meta.fields if name in data})
        try:
            schedule_clean(candidate)
        except ValidationError as error:
            # A field that failed its own check is missing from ``data``, and its first message stays the only one.
            for name, field_messages in error.message_dict.items():
                if name in data:
                    self.add_error(name, field_messages)
        return data


def _as_validation_error(check, value: str) -> str:
    try:
        return check(value)
    except AipError as error:
        raise ValidationError(str(error)) from None


class BackupInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The schedule's backups, newest first, read-only."""

    model = Backup
    fk_name = "schedule"
    fields = BACKUP_COLUMNS
    readonly_fields = BACKUP_COLUMNS
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    ordering = ("-snapshot_at", "-id")
    verbose_name_plural = "Backups (newest first)"

    @admin.display(description="folder")
    def folder_link(self, backup: Backup) -> str:
        return _backup_link(backup)

    @admin.display(description="size")
    def size(self, backup: Backup) -> str:
        return filesizeformat(backup.bytes)


@admin.register(BackupSchedule)
class BackupScheduleAdmin(admin.ModelAdmin):
    form = BackupScheduleForm
    list_display = (
        "name", "enabled", "target", "recursive", "cron", "incremental", "storage", "folder", "keep", "next_run_at",
        "last_backup",
    )
    list_filter = ("enabled", "incremental", "storage")
    search_fields = ("name", "handle", "folder", "eperson_email")
    actions = ["run_now"]
    inlines = [BackupInline]
    readonly_fields = ("next_run_at", "created_by", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "eperson_email")}),
        ("What", {"fields": ("handle", "recursive", "include_passwords")}),
        ("When", {"fields": ("cron", "next_run_at")}),
        ("How and where", {"fields": ("incremental", "storage", "folder", "keep")}),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )

    def get_changeform_initial_data(self, request) -> dict:
        initial = super().get_changeform_initial_data(request)
        eperson = getattr(request.user, "eperson", None)
        if eperson is not None and eperson.email:
            initial.setdefault("eperson_email", eperson.email)
        return initial

    def save_model(self, request, obj: BackupSchedule, form, change: bool) -> None:
        schedule_save(obj, user=request.user)
        logger.info("schedule %s (%s) %s by %s", obj.pk, obj.name, "changed" if change else "added", request.user)

    def has_export_aip_permission(self, request) -> bool:
        return request.user.has_perm("aip.export_aip")

    @admin.action(description="Run now", permissions=["export_aip"])
    def run_now(self, request, queryset) -> None:
        """Start a backup of each selected schedule now; their next scheduled runs stay as they are."""
        for schedule in queryset.order_by("name"):
            try:
                job = backup_start(schedule, user=request.user)
            except AipError as error:
                logger.warning("run now of schedule %s (%s) by %s failed: %s", schedule.pk, schedule.name,
                               request.user, error)
                self.message_user(request, f"{schedule.name}: {error}", messages.ERROR)
                continue
            self.log_change(request, schedule, f"Ran the backup now as job {job.pk}.")
            logger.info("schedule %s (%s): run now by %s as job %s", schedule.pk, schedule.name, request.user, job.pk)
            self.message_user(
                request,
                format_html(
                    '{}: backup job <a href="{}">{}</a> is {}.',
                    schedule.name, reverse("admin:aip_job_change", args=[job.pk]), job.pk, job.get_state_display(),
                ),
                messages.ERROR if job.state == job.State.FAILED else messages.SUCCESS,
            )

    @admin.display(description="object")
    def target(self, schedule: BackupSchedule) -> str:
        return schedule.handle or "whole site"

    @admin.display(description="last backup")
    def last_backup(self, schedule: BackupSchedule) -> str:
        backup = schedule.backups.order_by("-snapshot_at", "-id").first()
        if backup is None:
            return "-"
        return f"{backup.get_state_display()}, {backup.snapshot_at:%Y-%m-%d %H:%M} UTC"


@admin.register(Backup)
class BackupAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("folder", "schedule", "storage", "handle", *BACKUP_COLUMNS[1:], "job_link")
    list_filter = ("state", "incremental", "storage", "schedule")
    search_fields = ("folder", "handle", "schedule__name")
    list_select_related = ("schedule", "job")
    date_hierarchy = "snapshot_at"
    fields = (
        "schedule", "job_link", "storage", "folder", "handle", "state", "incremental", "based_on", "snapshot_at",
        "finished_at", "packages", "packages_written", "packages_copied", "size",
    )
    readonly_fields = fields

    @admin.display(description="size", ordering="bytes")
    def size(self, backup: Backup) -> str:
        return filesizeformat(backup.bytes)

    @admin.display(description="job")
    def job_link(self, backup: Backup) -> str:
        if backup.job_id is None:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("admin:aip_job_change", args=[backup.job_id]), backup.job_id)


def _backup_link(backup: Backup) -> str:
    return format_html('<a href="{}">{}</a>', reverse("admin:aip_backup_change", args=[backup.pk]), backup.folder)


class FixityProblemInline(ReadOnlyAdminMixin, admin.TabularInline):
    view_permission = "aip.view_backup"
    model = FixityProblem
    fields = ("source", "kind", "location", "expected", "actual", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(FixityRun)
class FixityRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Fixity runs (``manage.py aip_fixity``), each with the files that changed, went missing or were unreadable."""
    view_permission = "aip.view_backup"

    list_display = ("id", "started_at", "finished_at", "share", "first_slot", "state", "files_checked",
                    "size_checked", "problem_count")
    list_filter = ("state", "share")
    date_hierarchy = "started_at"
    fields = ("state", "share", "slots", "first_slot", "slot_count", "started_at", "finished_at", "files_checked",
              "size_checked", "problem_count", "error")
    readonly_fields = fields
    inlines = (FixityProblemInline,)

    @admin.display(description="size checked", ordering="bytes_checked")
    def size_checked(self, run: FixityRun) -> str:
        return filesizeformat(run.bytes_checked)


@admin.register(FixityProblem)
class FixityProblemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    view_permission = "aip.view_backup"
    list_display = ("run", "source", "kind", "location", "expected", "actual", "detail")
    list_filter = ("kind", "source")
    search_fields = ("location", "detail")
    list_select_related = ("run",)
    fields = ("run", "source", "kind", "location", "expected", "actual", "detail")
    readonly_fields = fields
