"""``manage.py packager``: export and ingest AIPs with DSpace's packager flags."""
from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

from aip import selectors
from aip.errors import AipError
from aip.models import Job
from aip.options import export_options, ingest_options, parse_option_pairs
from aip.progress import TerminalProgress
from aip.services.export import object_export
from aip.services.ingest import IngestReport, package_ingest
from aip.services import locks
from aip.services.jobs import job_create, job_enqueue, job_run
from aip.services.split import MAX_PARTS
from aip.services.verify import tree_verify, verify_validate_option
from repository.models import EPerson
from repository.permissions import is_administrator


class Command(BaseCommand):
    help = (
        "Export (-d) or ingest (-s submit, -r restore, -r -k keep existing, -r -f replace) DSpace AIPs: "
        "one METS zip per site, community, collection or item. With -a, an export writes every descendant "
        "into the folder of FILE, named <TYPE>@<handle with dashes>.zip, and an ingest follows the child "
        "packages that FILE lists. An ingest run is one transaction: on any error nothing is written. "
        "AIPs do not carry in-progress submissions, workflow items or usage statistics."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Package file to write (-d) or to read.")
        parser.add_argument("-t", "--type", default="AIP", help="Package type; only AIP is supported.")
        parser.add_argument("-e", "--eperson", required=True, help="Email of the EPerson doing the work.")
        parser.add_argument("-d", "--disseminate", action="store_true", help="Export instead of ingest.")
        parser.add_argument("-i", "--identifier", help="Handle of the object to export, or to replace with -r -f.")
        parser.add_argument("-a", "--all", action="store_true", help="Include all descendants (recursive).")
        parser.add_argument("-s", "--submit", action="store_true", help="Submit: new handles, parent from -p (default).")
        parser.add_argument("-r", "--restore", action="store_true", help="Restore handles and parents from the AIP.")
        parser.add_argument("-k", "--keep-existing", action="store_true", help="With -r: skip objects that exist.")
        parser.add_argument("-f", "--force-replace", action="store_true", help="With -r: replace objects that exist.")
        parser.add_argument(
            "-w", "--no-workflow", action="store_true",
            help="Submit: install items at once instead of sending them through the collection's workflow.",
        )
        parser.add_argument("-p", "--parent", action="append", default=[], help="Handle of the parent for ingest.")
        parser.add_argument(
            "-o", "--option", action="append", default=[], metavar="NAME=VALUE", help="Packager option; repeatable."
        )
        parser.add_argument(
            "-u", "--no-user-interaction", "--yes", action="store_true",
            help="Never prompt; with -r -f this confirms that existing objects may be replaced.",
        )
        parser.add_argument(
            "--verify", action="store_true",
            help="Check FILE (with -a, its whole tree) as a restore would, writing nothing: manifests, file sizes "
            "and MD5s, child packages and parents. With -o validate=true, also check manifests against the schemas "
            "in AIP_SCHEMA_DIR. Exits with an error if any problem is found.",
        )
        parser.add_argument(
            "--background", action="store_true",
            help="Check the arguments, queue the run as a job on the RQ queue 'default', print the job id and exit. "
            "Without REDIS_URL, the job runs at once in this process.",
        )
        parser.add_argument(
            "--parts", type=int, default=0, metavar="N",
            help="With -d -a or -r -a, and --background: split the export or restore into N part jobs, which N "
            "workers can run at once. See 'Split jobs' in docs/packager.md.",
        )
        parser.add_argument(
            "--storage", metavar="ALIAS", default="",
            help="FILE is a name in this STORAGES entry (such as 'aips', which may be S3), not a local path. "
            "The run is recorded as a job; without --background it runs in this process.",
        )

    def handle(self, *args, **options) -> None:
        self.verbosity = options["verbosity"]
        database_check()
        try:
            self._check_common(options)
            if options["verify"]:
                self._verify(options)
            elif options["disseminate"]:
                self._export(options)
            else:
                self._ingest(options)
        except AipError as error:
            raise CommandError(str(error)) from error

    @staticmethod
    def _check_parts(options: dict) -> None:
        parts = options["parts"]
        if not parts:
            return
        if not 2 <= parts <= MAX_PARTS:
            raise CommandError(
                f"Invalid number of parts {parts}: give a number from 2 to {MAX_PARTS}, or leave out --parts for one job."
            )
        if options["verify"]:
            raise CommandError(f"--parts {parts} applies to an export or restore, not to --verify. Leave out --parts.")
        if not (options["disseminate"] or options["restore"]):
            raise CommandError(
                f"--parts {parts}: a submit cannot be split into part jobs, because its items need the new handles "
                "their collections get in the same job. Leave out --parts."
            )
        if not options["all"]:
            raise CommandError(f"--parts {parts} only applies to a recursive export or restore. Add -a.")

    def _check_common(self, options: dict) -> None:
        if options["type"].upper() != "AIP":
            raise CommandError(f"Package type {options['type']!r} is not supported; use -t AIP.")
        self._check_parts(options)
        if options["parts"] and not options["background"]:
            raise CommandError(
                f"--parts needs --background: the {options['parts']} part jobs run on RQ workers. Add --background, "
                "or leave out --parts to run in this process."
            )
        person = EPerson.objects.filter(email__iexact=options["eperson"]).first()
        if person is None:
            raise CommandError(
                f"EPerson {options['eperson']!r} not found. Create one with "
                "'python manage.py create_administrator --email EMAIL --password PASSWORD'."
            )
        if not is_administrator(person):
            raise CommandError(
                f"EPerson {options['eperson']!r} is not an administrator; only members of the Administrator group "
                "may export or ingest AIPs. Use an administrator's email, or make this one an administrator with "
                "'python manage.py create_administrator'."
            )

    def _export(self, options: dict) -> None:
        if options["restore"] or options["submit"] or options["keep_existing"] or options["force_replace"]:
            raise CommandError("-d (export) cannot be combined with -s, -r, -k or -f.")
        if not options["identifier"]:
            raise CommandError("Export needs the handle of the object to export: -i HANDLE.")
        export = export_options(parse_option_pairs(options["option"]), recursive=options["all"])
        obj = selectors.object_by_handle_or_error(options["identifier"])
        path = Path(options["file"]).resolve()
        if options["background"] or options["storage"]:
            return self._enqueue(Job.Kind.EXPORT, options)
        progress = self._progress("exported")
        progress.total(selectors.tree_size(obj) if export.recursive else 1)
        try:
            keys = locks.export_keys(options["identifier"], storage="", path=path)
            with self._locked(keys, "export", options), locks.read_snapshot():
                result = object_export(obj=obj, path=path, options=export, progress=progress.package_written)
        finally:
            progress.close()
        unchanged = f", {len(result.unchanged)} unchanged item(s) left out" if result.unchanged else ""
        # Packages already complete from an earlier, interrupted run of the same export are kept, not rewritten.
        unchanged += f", {len(result.kept)} complete package(s) already there kept" if result.kept else ""
        self.stdout.write(
            f"Exported {len(result.packages)} package(s), {result.bytes_written} bytes, "
            f"in {result.seconds:.1f} s into {path.parent}{unchanged}"
        )

    def _verify(self, options: dict) -> None:
        modes = ("disseminate", "submit", "restore", "keep_existing", "force_replace")
        if any(options[mode] for mode in modes):
            raise CommandError("--verify cannot be combined with -d, -s, -r, -k or -f.")
        validate = verify_validate_option(parse_option_pairs(options["option"]))
        path = Path(options["file"]).resolve()
        if options["background"] or options["storage"]:
            return self._enqueue(Job.Kind.VERIFY, options)
        progress = self._progress("verified")
        try:
            with self._locked(locks.verify_keys(storage="", path=path), "verify", options):
                report = tree_verify(path=path, recursive=options["all"], validate=validate, progress=progress)
        finally:
            progress.close()
        for problem in report.problems:
            self.stderr.write(f"PROBLEM: {problem}")
        for warning in report.warnings:
            self.stderr.write(f"WARNING: {warning}")
        self.stdout.write(report.summary())
        if report.problems:
            raise CommandError(
                f"Verify found {len(report.problems)} problem(s) in {path.name}"
                f"{' and its child packages' if options['all'] else ''}; each is listed above as PROBLEM."
            )

    def _locked(self, keys: list, mode: str, options: dict):
        """Hold the same locks a job of this mode takes, so a job and an inline run never overlap."""
        return locks.locks_held(
            keys,
            holder=locks.packager_holder_name(mode, options["eperson"]),
            on_wait=lambda message: self.stderr.write(message),
        )

    def _progress(self, verb: str) -> TerminalProgress:
        """Return a progress bar for a terminal, or for a log a plain line now and then (one per package with -v 2)."""
        stream = _UnendedOutput(self.stdout)
        return TerminalProgress(stream, verb=verb, is_terminal=self.stdout.isatty(), every_package=self.verbosity >= 2)

    def _ingest(self, options: dict) -> None:
        if options["restore"] and options["submit"]:
            raise CommandError("-s (submit) and -r (restore) cannot be combined; choose one.")
        if (options["keep_existing"] or options["force_replace"]) and not options["restore"]:
            raise CommandError("-k and -f only apply to restore mode; add -r.")
        ingest = ingest_options(
            parse_option_pairs(options["option"]),
            restore=options["restore"],
            keep_existing=options["keep_existing"],
            replace=options["force_replace"],
            recursive=options["all"],
            use_workflow=not options["no_workflow"],
        )
        if options["force_replace"]:
            self._confirm_replace(options)
        parent = options["parent"][0] if options["parent"] else None
        if options["background"] or options["storage"]:
            kind = Job.Kind.SUBMIT
            if options["restore"]:
                kind = Job.Kind.REPLACE if options["force_replace"] else Job.Kind.RESTORE
            return self._enqueue(kind, options)
        path = Path(options["file"]).resolve()
        keys = locks.ingest_keys(
            path, storage="", path=path, replace_handle=options["identifier"], parent_handle=parent,
            manifest_only=ingest.manifest_only,
        )
        progress = self._progress("read")
        try:
            with self._locked(keys, "ingest", options):
                report = package_ingest(
                    path=path,
                    options=ingest,
                    parent_handle=parent,
                    replace_handle=options["identifier"],
                    eperson_email=options["eperson"],
                    progress=progress,
                )
        finally:
            progress.close()
        self._print_report(report)

    def _enqueue(self, kind: str, options: dict) -> None:
        storage = options["storage"]
        job = job_create(
            kind=kind,
            eperson_email=options["eperson"],
            path=options["file"] if storage else Path(options["file"]).resolve(),
            storage=storage,
            handle=options["identifier"] or "",
            parent_handle=options["parent"][0] if options["parent"] else "",
            options=parse_option_pairs(options["option"]),
            recursive=options["all"],
            keep_existing=options["keep_existing"],
            use_workflow=not options["no_workflow"],
            part_count=options["parts"],
        )
        if storage and not options["background"]:
            return self._job_report(job_run(job.pk), why=f"its package is in storage {storage!r}")
        job = job_enqueue(job)
        if job.state == Job.State.QUEUED:
            self.stdout.write(
                f"Queued job {job.pk} (RQ job {job.rq_job_id}). Follow it in the admin at /admin/aip/job/{job.pk}/change/; "
                "a worker started with 'python manage.py rqworker default' runs it."
            )
            return
        self._job_report(job, why="REDIS_URL is not set")

    def _job_report(self, job: Job, *, why: str) -> None:
        failed = job.state in (Job.State.FAILED, Job.State.CANCELLED)
        if job.started_at is not None:
            self.stdout.write(f"Job {job.pk} ran in this process because {why}: {job.state}.")
            lines = job.log.rstrip("\n").splitlines()
            if failed and lines and lines[-1].endswith(job.error):
                # The error ends the log; CommandError prints it once, on stderr.
                lines.pop()
            self.stdout.write("\n".join(lines))
        if failed:
            raise CommandError(job.error)

    def _confirm_replace(self, options: dict) -> None:
        """Ask before replace mode deletes data, unless -u/--yes confirmed it already."""
        if options["no_user_interaction"]:
            return
        target = options["identifier"] or f"the object named in {options['file']}"
        scope = " and every existing object in its tree" if options["all"] else ""
        warning = (
            f"Replace mode deletes the files, bundles, metadata and policies of {target}{scope} "
            "and puts the package's content in their place."
        )
        if not sys.stdin.isatty():
            raise CommandError(f"{warning} Add -u (or --yes) to confirm when not running on a terminal.")
        answer = input(f"{warning} Continue? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise CommandError("Replace cancelled; nothing was changed.")

    def _print_report(self, report: IngestReport) -> None:
        for warning in report.warnings:
            self.stderr.write(f"WARNING: {warning}")
        for line in report.lines():
            self.stdout.write(line)


class _UnendedOutput:
    """The command's output without the line ending Django adds, so that a bar can redraw its line."""

    def __init__(self, output):
        self.output = output

    def write(self, text: str) -> None:
        self.output.write(text, ending="")

    def flush(self) -> None:
        self.output.flush()


def database_check() -> None:
    """Raise ``CommandError`` when the database cannot be reached or lacks migrations, saying what to do."""
    try:
        executor = MigrationExecutor(connection)
        unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as error:
        reason = " ".join(str(error).split())
        raise CommandError(
            f"The database cannot be read ({reason}). Check DATABASE_URL and that the server is running."
        ) from None
    if unapplied:
        raise CommandError(
            f"The database {connection.settings_dict['NAME']} lacks {len(unapplied)} migration(s), starting with "
            f"{unapplied[0][0]}. Run 'python manage.py migrate' first."
        )
