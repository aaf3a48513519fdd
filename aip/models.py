"""Background jobs of the packager, kept as durable records.

The database row is the job: its arguments, state, progress, log and outcome.
Redis only carries the queue, so a job stays visible (and can be retried) after
Redis is flushed or a worker is lost. The record never stores password hashes or
other secrets: it names the EPerson by email and the options as given with -o.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Job(models.Model):
    """One export, ingest or verify run queued by ``packager --background`` or the admin."""

    class Kind(models.TextChoices):
        EXPORT = "export", "Export"
        SUBMIT = "submit", "Submit"
        RESTORE = "restore", "Restore"
        REPLACE = "replace", "Replace"
        VERIFY = "verify", "Verify"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)

    # Who started it: the EPerson given with -e, and the admin user when started from the admin.
    eperson_email = models.EmailField(max_length=254)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="aip_jobs"
    )

    # Arguments, as the packager command takes them.
    handle = models.CharField(max_length=256, blank=True, help_text="-i: object to export, or to replace.")
    parent_handle = models.CharField(max_length=256, blank=True, help_text="-p: parent for submit.")
    path = models.CharField(max_length=4096, help_text="Package file to write (export) or to read.")
    options = models.JSONField(default=dict, blank=True, help_text="Packager options (-o NAME=VALUE) by name.")
    recursive = models.BooleanField(default=False, help_text="-a: every descendant, or every child package.")
    keep_existing = models.BooleanField(default=False, help_text="-r -k: skip objects that exist.")
    use_workflow = models.BooleanField(default=True, help_text="Submit: send items through the workflow (no -w).")
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    # Progress: objects_total stays empty when the size of the run is not known in advance.
    objects_done = models.PositiveIntegerField(default=0)
    objects_total = models.PositiveIntegerField(null=True, blank=True)
    bytes_done = models.PositiveBigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    rq_job_id = models.CharField(max_length=64, blank=True, verbose_name="RQ job ID")
    worker_name = models.CharField(max_length=256, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the worker running this job."
    )

    log = models.TextField(blank=True, help_text="One line per package written, created, replaced or skipped.")
    error = models.TextField(blank=True, help_text="Why the job failed.")
    result_path = models.CharField(max_length=4096, blank=True, help_text="Package written by an export.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="aip_job_state_heartbeat")]

    def __str__(self) -> str:
        target = self.handle or self.path
        return f"Job {self.pk}: {self.get_kind_display()} {target} ({self.get_state_display()})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES
