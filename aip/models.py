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
        BACKUP = "backup", "Backup"

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

    # A split job: the parent job hands the tree's items to part jobs, which any worker may run. A final
    # RQ job then ends the parent (see aip.services.split).
    part_count = models.PositiveIntegerField(
        default=0,
        help_text="Recursive export or restore: split into this many part jobs (packager --parts); 0 runs one job.",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="parts",
        help_text="The split job this job is a part of.",
    )
    batch = models.JSONField(
        default=list, blank=True,
        help_text="Part of a split job: the items it handles, in order. An export lists primary keys, a restore "
        "lists [package name, primary keys of the collections listing it].",
    )

    # Progress: objects_total stays empty when the size of the run is not known in advance.
    objects_done = models.PositiveIntegerField(default=0)
    objects_total = models.PositiveIntegerField(null=True, blank=True)
    bytes_done = models.PositiveBigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    storage = models.CharField(
        max_length=64,
        blank=True,
        help_text="Name of the STORAGES entry that holds the package; empty when path is a file on the worker's disk.",
    )
    schedule = models.ForeignKey(
        "BackupSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    cancel_requested = models.BooleanField(
        default=False, help_text="Set by Cancel on a running job; the worker stops at its next progress report."
    )

    rq_job_id = models.CharField(
        max_length=64, blank=True, verbose_name="RQ job ID",
        help_text="RQ job that runs this job; for a running split job, the final job that ends it.",
    )
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
        # Who may start each kind of job from the admin; viewing jobs needs only "view_job".
        permissions = [
            ("export_aip", "Can export AIPs and back up the site"),
            ("restore_aip", "Can submit and restore AIPs"),
            ("replace_aip", "Can replace existing objects from AIPs"),
            ("verify_aip", "Can verify AIPs"),
            ("download_aip", "Can download AIPs"),
        ]

    def __str__(self) -> str:
        target = self.handle or self.path
        return f"Job {self.pk}: {self.get_kind_display()} {target} ({self.get_state_display()})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    @property
    def is_split(self) -> bool:
        """True for the parent job of a split export or restore, which its part jobs and a final job carry out."""
        return self.part_count > 1 and self.parent_id is None


class BackupSchedule(models.Model):
    """A recurring backup: which object, how often, full or incremental, where to, and how many to keep."""

    name = models.CharField(max_length=200, unique=True)
    handle = models.CharField(
        max_length=256, blank=True, help_text="Handle of the community, collection or item; empty for the whole site."
    )
    recursive = models.BooleanField(default=True, help_text="Also back up every descendant (-a).")
    include_passwords = models.BooleanField(
        default=False,
        verbose_name="Include password hashes",
        help_text="Write EPerson password hashes into the packages (-o passwords=true), so that people restored "
        "from the backup log in with their passwords. Anyone who can read the backups can then read the hashes.",
    )
    cron = models.CharField(
        max_length=100, help_text='When to run, as a cron expression in UTC, for example "0 2 * * *" for 02:00 daily.'
    )
    incremental = models.BooleanField(
        default=True,
        help_text="Write only the packages that changed since the last backup; unchanged ones are copied from it.",
    )
    storage = models.CharField(max_length=64, default="aips", help_text="Name of the STORAGES entry to write to.")
    folder = models.CharField(
        max_length=512, help_text="Folder in that storage; each backup is a dated folder inside it."
    )
    keep = models.PositiveIntegerField(
        default=7, help_text="How many verified backups to keep; older ones are removed after a newer one verifies."
    )
    eperson_email = models.EmailField(
        max_length=254, verbose_name="EPerson email", help_text="Administrator EPerson the backups run as (-e)."
    )
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(
        null=True, blank=True, help_text="When the scheduler runs it next; a time in the past means a missed run."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Backup(models.Model):
    """One run of a schedule: a dated folder in a storage that restores as a complete tree."""

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Failed"
        REMOVED = "removed", "Removed"

    schedule = models.ForeignKey(
        BackupSchedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups"
    )
    job = models.OneToOneField(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="backup")
    based_on = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The earlier backup an incremental one was compared with.",
    )
    storage = models.CharField(max_length=64)
    folder = models.CharField(max_length=512, help_text="Folder of this backup in its storage.")
    handle = models.CharField(max_length=256, blank=True)
    incremental = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    snapshot_at = models.DateTimeField(help_text="Changes after this moment are not in the backup.")
    finished_at = models.DateTimeField(null=True, blank=True)
    packages = models.PositiveIntegerField(default=0)
    packages_written = models.PositiveIntegerField(default=0, help_text="Packages exported by this run.")
    packages_copied = models.PositiveIntegerField(default=0, help_text="Unchanged packages copied from based_on.")
    bytes = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-snapshot_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["storage", "folder"], name="aip_backup_storage_folder")]

    def __str__(self) -> str:
        return f"{self.storage}:{self.folder} ({self.get_state_display()})"


class JobEvent(models.Model):
    """One line of a job's audit trail: the job's start and outcome, and what happened to each object."""

    class Action(models.TextChoices):
        STARTED = "started", "Started"
        WAITED = "waited", "Waited for a lock"
        EXPORTED = "exported", "Exported"
        KEPT = "kept", "Kept (already exported)"
        UNCHANGED = "unchanged", "Unchanged (left out)"
        COPIED = "copied", "Copied"
        CREATED = "created", "Created"
        REPLACED = "replaced", "Replaced"
        SKIPPED = "skipped", "Skipped"
        VERIFIED = "verified", "Verified"
        PROBLEM = "problem", "Problem"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.CharField(max_length=254, blank=True, help_text="EPerson email, and the admin user when there is one.")
    object_type = models.CharField(max_length=16, blank=True)
    handle = models.CharField(max_length=256, blank=True)
    uuid = models.CharField(max_length=64, blank=True, verbose_name="UUID")
    package = models.CharField(max_length=1024, blank=True, help_text="Package file name.")
    detail = models.TextField(blank=True, help_text="Reason or outcome in words.")

    class Meta:
        ordering = ["job", "at", "id"]
        indexes = [
            models.Index(fields=["action", "at"], name="aip_jobevent_action_at"),
            models.Index(fields=["handle"], name="aip_jobevent_handle"),
        ]

    def __str__(self) -> str:
        target = self.handle or self.package or self.uuid
        return f"Job {self.job_id}: {self.get_action_display()} {target}".rstrip()


class FixityRun(models.Model):
    """One fixity check: a share of the stored backup packages and bitstream files, re-read and compared."""

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        PROBLEMS = "problems", "Problems found"
        FAILED = "failed", "Failed"

    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    share = models.CharField(max_length=32, help_text='Fraction checked per run, as "K/N".')
    slots = models.PositiveIntegerField(help_text="N: everything is split into this many slots by a hash of its name.")
    first_slot = models.PositiveIntegerField(help_text="First slot this run checked.")
    slot_count = models.PositiveIntegerField(help_text="K: how many consecutive slots this run checked.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    files_checked = models.PositiveIntegerField(default=0)
    bytes_checked = models.PositiveBigIntegerField(default=0)
    problem_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the run stopped before the end.")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"Fixity run {self.pk} ({self.share}, {self.get_state_display()})"

    @property
    def next_slot(self) -> int:
        return (self.first_slot + self.slot_count) % self.slots


class FixityProblem(models.Model):
    """A stored file whose checksum or size changed, or that went missing or cannot be read."""

    class Kind(models.TextChoices):
        CHANGED = "changed", "Changed"
        MISSING = "missing", "Missing"
        UNREADABLE = "unreadable", "Unreadable"

    class Source(models.TextChoices):
        BACKUP = "backup", "Backup package"
        BITSTREAM = "bitstream", "Bitstream file"

    run = models.ForeignKey(FixityRun, on_delete=models.CASCADE, related_name="problems")
    source = models.CharField(max_length=16, choices=Source.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    location = models.CharField(max_length=1024, help_text="Storage and name, or the bitstream's UUID and file.")
    expected = models.CharField(max_length=128, blank=True, help_text="Checksum and size on record.")
    actual = models.CharField(max_length=128, blank=True, help_text="Checksum and size read now.")
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.location}"
