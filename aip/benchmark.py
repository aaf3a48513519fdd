"""Measure export and restore against plain file copies, on a generated repository.

Steps of a run (``benchmark_run``):

1. Create a scratch PostgreSQL database on the server of the configured one,
   migrate it and add an administrator, then copy it as a second, empty scratch
   database for the restore.
2. Generate the repository: one community, a collection per 1,000 items, and
   items with metadata, policies and files of the requested size.
3. Measure a full-site export, an export with ``updated_after`` set to the start
   of the full export (every item is left out as unchanged), a restore of the
   full export into the empty database, and two baselines on the same bitstream
   files: copying each file once, and copying while computing its MD5.
4. Drop both databases and delete the scratch folder, whatever happened.

With ``parts`` set, the full export and the restore are split jobs
(``aip.services.split``) run by ``workers`` RQ worker processes on a scratch Redis
database, which must be empty when the run starts and is flushed when it ends.

Each step runs in a child process (``python -m aip.benchmark STEP``), so its peak
resident memory is its own: the child reads VmHWM from /proc/self/status when
the step ends. VmHWM includes the interpreter and Django, which ``startup_rss_mb``
reports on its own. The child counts the SQL queries of the step with a
connection execute wrapper, and reports the wall-clock and CPU time of the step
alone, without the start-up.
"""
from __future__ import annotations

import cProfile
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid as uuid_module
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

# Steps in the order a run measures them, each with the baseline its ratio compares against.
STEPS = ("export", "incremental_export", "full_backup", "incremental_backup", "restore", "copy", "copy_md5")
BASELINES = {
    "export": "copy",
    "incremental_export": "copy",
    # A backup is compared with the full export: the incremental target is a share of it.
    "full_backup": "export",
    "incremental_backup": "export",
    "restore": "copy_md5",
}
ITEMS_PER_COLLECTION = 1000
ADMIN_EMAIL = "benchmark@example.org"
SITE_PACKAGE = "SITE@{prefix}-0.zip"
CHUNK_SIZE = 1024 * 1024
# Seconds a worker of a split job waits with no RQ job queued, deferred or started before it gives up.
SPLIT_IDLE_LIMIT = 60
# Items are dated well before any run, so the incremental export finds none changed.
ITEM_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)
PROJECT_DIR = Path(__file__).resolve().parent.parent


class BenchmarkError(Exception):
    """A benchmark that cannot run here, or a step that failed."""


@dataclass(frozen=True)
class Shape:
    """The repository a run generates, and how many processes export and copy it."""

    items: int
    files_per_item: int
    file_size: int  # bytes
    # RQ workers that run the split export, and processes that run each copy baseline.
    workers: int = 1
    # Part jobs of the split export and restore; 0 runs each in one process, without RQ.
    parts: int = 0


@dataclass(frozen=True)
class ScratchServer:
    """Connection values of the PostgreSQL server where the scratch databases are created."""

    host: str
    port: str
    user: str
    password: str
    configured_name: str

    def url(self, name: str) -> str:
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        host = self.host or "localhost"
        port = f":{self.port}" if self.port else ""
        return f"postgres://{credentials}@{host}{port}/{name}"


def scratch_server(database: dict, scratch_name: str) -> ScratchServer:
    """Return the server of ``database`` (Django's DATABASES entry), or raise when it cannot hold scratch databases."""
    if "postgresql" not in database.get("ENGINE", ""):
        raise BenchmarkError(
            f"The benchmark needs PostgreSQL, and the configured database uses {database.get('ENGINE')}. "
            "Set DATABASE_URL to a PostgreSQL server (postgres://user@host:port/name); the benchmark creates and "
            "drops its own databases there and never writes to the configured one."
        )
    configured = str(database.get("NAME") or "")
    for name in (scratch_name, f"{scratch_name}_restore"):
        if name == configured:
            raise BenchmarkError(
                f"The scratch database name {name!r} is the configured database. Choose another with --scratch-name; "
                "the benchmark drops its scratch databases when it ends."
            )
    if not scratch_name.replace("_", "").isalnum() or not scratch_name[0].isalpha():
        raise BenchmarkError(
            f"Invalid scratch database name {scratch_name!r}: use letters, digits and underscores, starting with a letter."
        )
    return ScratchServer(
        host=str(database.get("HOST") or ""),
        port=str(database.get("PORT") or ""),
        user=str(database.get("USER") or ""),
        password=str(database.get("PASSWORD") or ""),
        configured_name=configured,
    )


# The parent process


def benchmark_run(
    shape: Shape,
    *,
    server: ScratchServer,
    scratch_name: str,
    work_dir: Path | None = None,
    profile_dir: Path | None = None,
    report=lambda message: None,
    redis_url: str = "",
    warm_memory: bool = False,
) -> dict:
    """Generate a repository of ``shape`` in scratch databases and folders, measure every step, and return the figures.

    ``redis_url`` names the scratch Redis database of the split jobs (``shape.parts``).
    ``warm_memory`` chooses how each step meets the memory it writes (see ``_ChildRunner``).
    """
    from aip.services.split import MAX_PARTS

    if shape.items < 1 or shape.files_per_item < 0 or shape.file_size < 0 or shape.workers < 1:
        raise BenchmarkError(
            f"Invalid benchmark shape: --items {shape.items}, --files {shape.files_per_item}, --file-size "
            f"{shape.file_size}, --workers {shape.workers}. Give at least 1 item and 1 worker, and no negative "
            "number of files or size."
        )
    if shape.parts == 1 or not 0 <= shape.parts <= MAX_PARTS:
        raise BenchmarkError(
            f"Invalid number of parts {shape.parts}: give a number from 2 to {MAX_PARTS} for a split export and "
            "restore, or 0 for none."
        )
    if shape.parts:
        _redis_scratch_check(redis_url)
    folder = Path(tempfile.mkdtemp(prefix="aip-benchmark-", dir=work_dir))
    restore_name = f"{scratch_name}_restore"
    # Only databases this run created are dropped, so an existing database of that name is never touched.
    created: list[str] = []
    try:
        _database_create(server, scratch_name, created)
        child = _ChildRunner(
            server=server,
            folder=folder,
            profile_dir=profile_dir,
            redis_url=redis_url if shape.parts else "",
            file_bytes=shape.items * shape.files_per_item * shape.file_size,
            warm_memory=warm_memory,
        )
        report(f"Preparing the scratch database {scratch_name}")
        child.run("prepare", database=scratch_name)
        _database_create(server, restore_name, created, template=scratch_name)
        report(f"Generating {shape.items} items with {shape.files_per_item} file(s) of {shape.file_size} bytes")
        generated = child.run("generate", database=scratch_name, shape=asdict(shape))
        steps: dict[str, dict] = {}
        try:
            _measure(child, shape, scratch_name, restore_name, report, steps)
        except BenchmarkError as error:
            raise BenchmarkError(f"{error}\nSteps measured before the failure: {json.dumps(steps)}") from None
    finally:
        for name in reversed(created):
            _database_drop(server, name)
        shutil.rmtree(folder, ignore_errors=True)
        if shape.parts:
            _redis_flush(redis_url)
    return _summary(shape, generated, steps, warm_memory=warm_memory)


def _redis_connect(redis_url: str):
    import redis

    return redis.Redis.from_url(redis_url, socket_connect_timeout=5)


def _redis_scratch_check(redis_url: str) -> None:
    """Raise ``BenchmarkError`` unless ``redis_url`` names a reachable, empty Redis database."""
    import redis

    if not redis_url:
        raise BenchmarkError("Split jobs need a scratch Redis database: give --redis-url.")
    try:
        keys = _redis_connect(redis_url).dbsize()
    except redis.RedisError as error:
        raise BenchmarkError(
            f"Redis at {redis_url} is not reachable: {str(error).rstrip('.')}. Start Redis or give another --redis-url."
        ) from error
    if keys:
        raise BenchmarkError(
            f"Redis database {redis_url} contains {keys} key(s). The benchmark flushes its Redis database when it "
            "ends, so give an empty one with --redis-url."
        )


def _redis_flush(redis_url: str) -> None:
    import redis

    try:
        _redis_connect(redis_url).flushdb()
    except redis.RedisError as error:
        print(f"The scratch Redis database {redis_url} was not flushed: {error}", file=sys.stderr)


def _tree_step_run(
    child: _ChildRunner, shape: Shape, step: str, description: str, *, database: str, report
) -> dict:
    """Measure ``step`` (export or restore) as split jobs on RQ when ``shape`` has parts, else in one process."""
    if not shape.parts:
        report(f"Measuring {description}")
        return child.run(step, database=database)
    report(f"Measuring {description}, split into {shape.parts} part jobs run by {shape.workers} RQ worker(s)")
    return child.run_split(step, database=database, workers=shape.workers, parts=shape.parts)


def _measure(child: _ChildRunner, shape: Shape, source: str, target: str, report, steps: dict[str, dict]) -> None:
    """Run the measured steps in order, adding each one's figures to ``steps`` as it ends."""
    steps["export"] = _tree_step_run(child, shape, "export", "the full export", database=source, report=report)
    report("Measuring the incremental export")
    steps["incremental_export"] = child.run(
        "incremental_export", database=source, updated_after=steps["export"]["started_at"]
    )
    report("Measuring a full backup, then an incremental backup with nothing changed")
    steps["full_backup"] = child.run("full_backup", database=source)
    steps["incremental_backup"] = child.run("incremental_backup", database=source)
    steps["restore"] = _tree_step_run(
        child, shape, "restore", "the restore into the empty database", database=target, report=report
    )
    report("Measuring the file copy baselines")
    for step in ("copy", "copy_md5"):
        steps[step] = child.run_parallel(step, database=source, workers=shape.workers)
        # The copies are only timed; removing them keeps a large run within the free disk.
        shutil.rmtree(child.folder / "copies", ignore_errors=True)


def _summary(shape: Shape, generated: dict, steps: dict[str, dict], *, warm_memory: bool) -> dict:
    for name, step in steps.items():
        baseline = BASELINES.get(name)
        base_seconds = steps[baseline]["seconds"] if baseline else None
        step["baseline"] = baseline
        step["ratio_to_baseline"] = round(step["seconds"] / base_seconds, 2) if base_seconds else None
        step["items_per_second"] = round(shape.items / step["seconds"], 1) if step["seconds"] else None
        step["queries_per_item"] = round(step["queries"] / shape.items, 2)
    return {
        "shape": asdict(shape),
        "generated": generated,
        "incremental_export_method": "object_export with updated_after set to the start time of the full export",
        "backup_method": "backup jobs of one incremental schedule, run in the step's process: a full one, then one "
        "with nothing changed, which copies the item packages of the first",
        "memory_method": "VmHWM of /proc/self/status read by each step's own child process",
        "memory_state": "warmed" if warm_memory else "settled",
        "steps": steps,
    }


def _admin_connection(server: ScratchServer):
    import psycopg

    # The maintenance database "postgres", which initdb creates; the configured database may not exist yet.
    try:
        return psycopg.connect(server.url("postgres"), autocommit=True)
    except psycopg.OperationalError as error:
        where = f"{server.host or 'the local socket'}" + (f":{server.port}" if server.port else "")
        reason = " ".join(str(error).split())
        raise BenchmarkError(
            f"PostgreSQL at {where} cannot be reached ({reason}). Start PostgreSQL, or set DATABASE_URL to a running "
            "server."
        ) from None


def _database_create(server: ScratchServer, name: str, created: list[str], *, template: str | None = None) -> None:
    """Create the database ``name`` and add it to ``created``, or raise when a database of that name exists."""
    from psycopg import sql

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    with _admin_connection(server) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            raise BenchmarkError(
                f"Database {name!r} already exists. Choose another --scratch-name, or drop {name!r} if an "
                "interrupted benchmark left it behind."
            )
        connection.execute(statement)
    created.append(name)


def _database_drop(server: ScratchServer, name: str) -> None:
    from psycopg import sql

    with _admin_connection(server) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# Children that queue or run the jobs of a split step; the others run their jobs in their own process.
SPLIT_CHILD_STEPS = ("split_enqueue", "rq_worker", "split_outcome")
# Children whose work is timed. rq_worker runs the jobs of a split export or restore.
MEASURED_STEPS = (
    "export", "incremental_export", "full_backup", "incremental_backup", "restore", "copy", "copy_md5", "rq_worker"
)
# Below this many bytes of files, what memory a step writes into changes its time by less than 0.5 s.
SETTLE_MIN_BYTES = 256 * 1024 * 1024
# After this pause, writing 1 GiB took as long as into memory never used (1.9 s against 0.2 s at once, 0.8 s
# after 3 s and 1.5 s after 6 s).
SETTLE_SECONDS = 15


class _ChildRunner:
    """Starts one child process per step and reads back the JSON result it writes."""

    def __init__(
        self,
        *,
        server: ScratchServer,
        folder: Path,
        profile_dir: Path | None,
        redis_url: str = "",
        file_bytes: int = 0,
        warm_memory: bool = False,
    ):
        self.server = server
        self.folder = folder
        self.profile_dir = profile_dir
        self.redis_url = redis_url
        # A virtual machine gives freed pages back to its hypervisor (see memory_warm). By default each
        # measured step waits until that has happened, so every step and baseline writes into returned
        # memory. With warm_memory, a step's children touch as much memory as its files take instead.
        self.file_bytes = file_bytes
        self.warm_memory = warm_memory

    def _start(
        self, step: str, *, database: str, worker: int = 0, workers: int = 1, label: str = "", **arguments
    ) -> tuple:
        """Start the child of ``step``; ``label`` (default the step) names its result and profile files."""
        label = label or step
        result_path = self.folder / f"{label}-{worker}.json"
        measured = step in MEASURED_STEPS
        if measured and worker == 0 and not self.warm_memory and self.file_bytes >= SETTLE_MIN_BYTES:
            time.sleep(SETTLE_SECONDS)
        arguments.update(
            folder=str(self.folder),
            worker=worker,
            workers=workers,
            result=str(result_path),
            warm_bytes=self.file_bytes // workers if measured and self.warm_memory else 0,
        )
        if self.profile_dir is not None:
            arguments["profile"] = str(self.profile_dir / f"{label}-{worker}.prof")
        # A restore, split or not, stores the bitstreams it reads in a folder of its own.
        bitstreams = "restored" if label.startswith("restore") else "assetstore"
        environment = dict(
            os.environ,
            # Jobs run in the child itself, so that a backup step times the backup and not a queue.
            REDIS_URL="",
            DATABASE_URL=self.server.url(database),
            BITSTREAM_ROOT=str(self.folder / bitstreams),
            AIP_STORAGE_ROOT=str(self.folder / "aips"),
            DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"),
        )
        if self.redis_url and step in SPLIT_CHILD_STEPS:
            environment["REDIS_URL"] = self.redis_url
        process = subprocess.Popen(
            [sys.executable, "-m", "aip.benchmark", step, json.dumps(arguments)],
            cwd=PROJECT_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return process, result_path

    @staticmethod
    def _open_gate(gate: Path, started: list) -> None:
        """Create ``gate`` once every child has written its ready file, or one of them has ended."""
        ready = [gate.with_name(f"{gate.stem}-{index}.ready") for index in range(len(started))]
        while not all(path.exists() for path in ready):
            if any(process.poll() is not None for process, _ in started):
                break
            time.sleep(0.01)
        gate.touch()

    @staticmethod
    def _finish(step: str, process, result_path: Path) -> dict:
        output, _ = process.communicate()
        if process.returncode != 0 or not result_path.exists():
            raise BenchmarkError(f"The benchmark step {step} failed (exit code {process.returncode}):\n{output[-4000:]}")
        return json.loads(result_path.read_text())

    def run(self, step: str, *, database: str, **arguments) -> dict:
        process, result_path = self._start(step, database=database, **arguments)
        return self._finish(step, process, result_path)

    def run_parallel(self, step: str, *, database: str, workers: int) -> dict:
        """Run ``workers`` children of one step at once and combine them: wall time from first start to last end.

        The children wait for each other after start-up, so that the time of the slowest start-up is not counted.
        """
        gate = self.folder / f"{step}.go"
        started = [
            self._start(step, database=database, worker=index, workers=workers, gate=str(gate))
            for index in range(workers)
        ]
        self._open_gate(gate, started)
        parts = [self._finish(step, process, path) for process, path in started]
        combined = dict(parts[0])
        combined["started_at"] = min(part["started_at"] for part in parts)
        combined["seconds"] = round(max(part["ended_at"] for part in parts) - combined["started_at"], 3)
        combined["peak_rss_mb"] = max(part["peak_rss_mb"] for part in parts)
        for total in ("queries", "packages", "bytes_read", "bytes_written", "cpu_seconds"):
            combined[total] = sum(part.get(total, 0) for part in parts)
        return combined

    def run_split(self, step: str, *, database: str, workers: int, parts: int) -> dict:
        """Queue ``step`` (export or restore) of the site as a split job, run it with ``workers`` RQ workers.

        The time runs from the moment the started workers may take jobs (the job is already
        queued) to the moment its final job ended it, as recorded on its job row. CPU time and
        queries are the sums over the workers, and peak memory is the largest worker's.
        """
        queued = self.run("split_enqueue", database=database, parts=parts, kind=step)
        gate = self.folder / f"{step}-split.go"
        started = [
            self._start("rq_worker", database=database, worker=index, workers=workers, gate=str(gate),
                        job_id=queued["job_id"], label=f"{step}-rq_worker")
            for index in range(workers)
        ]
        self._open_gate(gate, started)
        opened_at = time.time()
        figures = [self._finish(f"rq_worker of the {step}", process, path) for process, path in started]
        outcome = self.run("split_outcome", database=database, job_id=queued["job_id"])
        return {
            "started_at": opened_at,
            "seconds": round(outcome["finished_at"] - opened_at, 3),
            "cpu_seconds": round(sum(worker["cpu_seconds"] for worker in figures), 3),
            "queries": sum(worker["queries"] for worker in figures),
            "peak_rss_mb": max(worker["peak_rss_mb"] for worker in figures),
            "startup_rss_mb": max(worker["startup_rss_mb"] for worker in figures),
            "packages": outcome["packages"],
            "bytes_written": outcome["bytes_written"],
            "rq_workers": workers,
            "parts": outcome["parts"],
            "jobs": [_times_relative(times, opened_at) for times in outcome["jobs"]],
        }


def _times_relative(times: dict, origin: float) -> dict:
    """Turn a job's timestamps into seconds after ``origin``, rounded to milliseconds."""
    return {
        name: round(value - origin, 3) if name.endswith("_at") and value is not None else value
        for name, value in times.items()
    }


# The generated repository

GENERATE_BATCH = 500
ITEM_FIELDS = ("dc.title", "dc.contributor.author", "dc.contributor.author", "dc.date.issued", "dc.subject", "dc.description.abstract")


def repository_generate(shape: Shape) -> dict:
    """Create the benchmark repository with bulk inserts and return how much it holds.

    Every item has six metadata values, a READ policy for Anonymous and a WRITE
    policy for its collection's submitters group, and one ORIGINAL bundle whose
    files each have a READ policy. File content is random bytes (incompressible,
    as most large files are), different in each file.
    """
    from django.db import transaction

    from repository.changes import change_tracking_suspended

    with transaction.atomic(), change_tracking_suspended():
        generator = _Generator(shape)
        generator.containers()
        for start in range(0, shape.items, GENERATE_BATCH):
            generator.items(start, min(start + GENERATE_BATCH, shape.items))
    return {
        "collections": len(generator.collections),
        "items": shape.items,
        "bitstreams": generator.bitstreams,
        "bytes": generator.bytes,
    }


class _Generator:
    def __init__(self, shape: Shape) -> None:
        from django.conf import settings

        from repository.models import BitstreamFormat, EPerson, Group

        self.shape = shape
        self.root = Path(settings.BITSTREAM_ROOT)
        self.block = os.urandom(CHUNK_SIZE)
        self.anonymous = Group.objects.get(name=Group.ANONYMOUS)
        self.submitter = EPerson.objects.get(email=ADMIN_EMAIL)
        self.format = BitstreamFormat.objects.filter(mimetype="application/octet-stream").first() or BitstreamFormat.objects.first()
        self.fields = {name: self._field(name) for name in set(ITEM_FIELDS)}
        self.collections: list = []
        self.bitstreams = 0
        self.bytes = 0

    @staticmethod
    def _field(name: str):
        from repository.models import MetadataField, MetadataSchema

        schema, element, *qualifier = name.split(".")
        found, _ = MetadataField.objects.get_or_create(
            schema=MetadataSchema.objects.get(short_id=schema), element=element, qualifier=qualifier[0] if qualifier else None
        )
        return found

    def containers(self) -> None:
        from aip.services.handles import handle_mint
        from repository.models import Collection, Community, Group

        community = Community.objects.create(handle=handle_mint("COMMUNITY"), name="Benchmark community")
        self._title(community, community.name)
        count = -(-self.shape.items // ITEMS_PER_COLLECTION)
        for index in range(count):
            collection = Collection.objects.create(
                handle=handle_mint("COLLECTION"), community=community, name=f"Benchmark collection {index + 1:04d}"
            )
            # A group named after its collection, as DSpace names role groups; export writes its handle instead.
            collection.submitters_group = Group.objects.create(name=f"COLLECTION_{collection.uuid}_SUBMIT")
            collection.save(update_fields=["submitters_group"])
            self._title(collection, collection.name)
            self.collections.append(collection)

    def _title(self, obj, title: str) -> None:
        from repository.models import MetadataValue, object_kwargs

        MetadataValue.objects.create(field=self.fields["dc.title"], value=title, place=0, **object_kwargs(obj))

    def items(self, start: int, end: int) -> None:
        from repository.models import Bundle, Item

        handles = self._handles(end - start)
        items = Item.objects.bulk_create(
            Item(
                handle=handle,
                owning_collection=self.collections[number // ITEMS_PER_COLLECTION],
                in_archive=True,
                last_modified=ITEM_TIME + timedelta(seconds=number),
                submitter=self.submitter,
                name=f"Benchmark item {number + 1}",
            )
            for number, handle in zip(range(start, end), handles)
        )
        self._item_metadata(items)
        bundles = []
        if self.shape.files_per_item:
            bundles = Bundle.objects.bulk_create(Bundle(item=item, name="ORIGINAL", position=0) for item in items)
            self._bundle_files(bundles)
        self._policies(items, bundles)

    def _handles(self, count: int) -> list:
        from django.conf import settings
        from django.db.models import Max

        from repository.models import Handle

        prefix = settings.HANDLE_PREFIX
        largest = Handle.objects.filter(prefix=prefix).aggregate(largest=Max("suffix_number"))["largest"] or 0
        numbers = range(largest + 1, largest + 1 + count)
        return Handle.objects.bulk_create(
            Handle(handle=f"{prefix}/{n}", prefix=prefix, suffix=str(n), suffix_number=n, resource_type="ITEM")
            for n in numbers
        )

    def _item_metadata(self, items: list) -> None:
        from repository.models import MetadataValue

        rows = []
        for item in items:
            texts = (item.name, "Author, First", "Author, Second", "2024-01-01", "benchmarks", f"Abstract of {item.name}.")
            for place, (name, text) in enumerate(zip(ITEM_FIELDS, texts)):
                rows.append(MetadataValue(field=self.fields[name], value=text, place=place, item=item))
        MetadataValue.objects.bulk_create(rows)

    def _bundle_files(self, bundles: list) -> None:
        from repository.models import Bitstream, Bundle

        rows = []
        for bundle in bundles:
            for position in range(self.shape.files_per_item):
                bitstream = Bitstream(
                    bundle=bundle,
                    position=position,
                    sequence_id=position + 1,
                    name=f"file-{position + 1}.bin",
                    format=self.format,
                    checksum_algorithm="MD5",
                )
                self._file_write(bitstream)
                rows.append(bitstream)
        Bitstream.objects.bulk_create(rows)
        for bundle, first in zip(bundles, rows[:: self.shape.files_per_item]):
            bundle.primary_bitstream = first
        Bundle.objects.bulk_update(bundles, ["primary_bitstream"])

    def _file_write(self, bitstream) -> None:
        text = str(bitstream.uuid)
        name = f"{text[:2]}/{text[2:4]}/{text}"
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.md5()
        remaining = self.shape.file_size
        # The UUID first makes every file's content, and so its MD5, different.
        header = text.encode()[:remaining]
        with path.open("wb") as target:
            for chunk in (header, *self._body(remaining - len(header))):
                digest.update(chunk)
                target.write(chunk)
        bitstream.file.name = name
        bitstream.size_bytes = self.shape.file_size
        bitstream.checksum = digest.hexdigest()
        self.bitstreams += 1
        self.bytes += self.shape.file_size

    def _body(self, size: int):
        while size > 0:
            chunk = self.block[: min(size, CHUNK_SIZE)]
            size -= len(chunk)
            yield chunk

    def _policies(self, items: list, bundles: list) -> None:
        from repository.models import Bitstream, ResourcePolicy

        action = ResourcePolicy.Action
        rows = []
        for item in items:
            rows.append(ResourcePolicy(action=action.READ, group=self.anonymous, item=item))
            rows.append(ResourcePolicy(action=action.WRITE, group=item.owning_collection.submitters_group, item=item))
        rows += [ResourcePolicy(action=action.READ, group=self.anonymous, bundle=bundle) for bundle in bundles]
        bitstreams = Bitstream.objects.filter(bundle__in=bundles).only("pk")
        rows += [ResourcePolicy(action=action.READ, group=self.anonymous, bitstream=bitstream) for bitstream in bitstreams]
        ResourcePolicy.objects.bulk_create(rows)


# The child process


def peak_rss_mb() -> float:
    """Return this process's peak resident set size (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise BenchmarkError("/proc/self/status has no VmHWM line; peak memory cannot be measured on this system.")


# Share of the available memory that the warm-up may touch.
WARM_SHARE = 0.5
PAGE_SIZE = 4096


def memory_warm(size: int) -> None:
    """Touch and free ``size`` bytes of memory (at most half the available memory), then reset VmHWM.

    On a virtual machine that reports free pages to its hypervisor (virtio-balloon),
    the first write to a reported page traps into the hypervisor. Writing 1 GiB into
    a new file took 1.4 to 2.5 s there, and 0.2 s right after the same amount had
    been freed. Freed pages are cheap only until the guest reports them, within
    seconds. With ``--warm-memory`` every step touches the memory its output needs
    just before its clock starts, so that it writes into cheap memory, as on a
    machine without a hypervisor. The peak memory figure starts after the warm-up.
    """
    size = min(size, int(_available_bytes() * WARM_SHARE))
    if size < PAGE_SIZE:
        return
    block = bytearray(size)
    for offset in range(0, size, PAGE_SIZE):
        block[offset] = 1
    del block
    Path("/proc/self/clear_refs").write_text("5")


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class _QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def _child_main(step: str, arguments: dict) -> None:
    import django

    django.setup()
    from django.db import connection

    memory_warm(arguments.get("warm_bytes", 0))
    _gate_wait(arguments)
    startup_rss = peak_rss_mb()
    cpu_before = os.times()
    counter = _QueryCounter()
    profiler = cProfile.Profile() if arguments.get("profile") else None
    started_at = time.time()
    with connection.execute_wrapper(counter):
        if profiler:
            profiler.enable()
        figures = CHILD_STEPS[step](arguments)
        if profiler:
            profiler.disable()
    ended_at = time.time()
    cpu_after = os.times()
    if profiler:
        profiler.dump_stats(arguments["profile"])
    figures.update(
        started_at=started_at,
        ended_at=ended_at,
        seconds=round(ended_at - started_at, 3),
        cpu_seconds=round((cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system), 3),
        queries=counter.count,
        peak_rss_mb=peak_rss_mb(),
        startup_rss_mb=startup_rss,
    )
    Path(arguments["result"]).write_text(json.dumps(figures))


def _gate_wait(arguments: dict) -> None:
    """Tell the parent this child is ready, and wait until the parent opens the gate of a parallel step."""
    if not arguments.get("gate"):
        return
    gate = Path(arguments["gate"])
    gate.with_name(f"{gate.stem}-{arguments['worker']}.ready").touch()
    while not gate.exists():
        time.sleep(0.01)


def _step_prepare(arguments: dict) -> dict:
    from django.core.management import call_command

    from aip.selectors import site_get
    from repository.services import administrator_create

    call_command("migrate", verbosity=0)
    site_get()
    administrator_create(email=ADMIN_EMAIL, password=uuid_module.uuid4().hex)
    return {}


def _step_generate(arguments: dict) -> dict:
    return repository_generate(Shape(**arguments["shape"]))


def _site_package(folder: Path) -> Path:
    from django.conf import settings

    return folder / "export" / SITE_PACKAGE.format(prefix=settings.HANDLE_PREFIX)


def _step_export(arguments: dict) -> dict:
    from aip.options import ExportOptions
    from aip.selectors import site_get
    from aip.services.export import object_export

    path = _site_package(Path(arguments["folder"]))
    result = object_export(obj=site_get(), path=path, options=ExportOptions(recursive=True))
    return {"packages": len(result.packages), "bytes_written": result.bytes_written}


def _step_split_enqueue(arguments: dict) -> dict:
    """Queue a split export of the site, or a split restore of its export in restore and replace mode (-r -a -f)."""
    from django.conf import settings

    from aip.models import Job
    from aip.services.jobs import job_create, job_enqueue

    export = arguments["kind"] == "export"
    job = job_create(
        kind=Job.Kind.EXPORT if export else Job.Kind.REPLACE,
        eperson_email=ADMIN_EMAIL,
        handle=f"{settings.HANDLE_PREFIX}/0" if export else "",
        path=_site_package(Path(arguments["folder"])),
        recursive=True,
        part_count=arguments["parts"],
    )
    return {"job_id": job_enqueue(job).pk}


def _step_rq_worker(arguments: dict) -> dict:
    """Run RQ jobs until the split job has ended; a burst run could end while another worker queues the parts."""
    import django_rq
    from rq.worker import SimpleWorker

    from aip.models import Job

    class Worker(SimpleWorker):
        # No command channel: rq 2.12 polls it from a thread every 60 s, and stopping that thread when the
        # worker quits can wait for a whole poll.
        def subscribe(self) -> None:
            self.pubsub_thread = None

    queue = django_rq.get_queue("default")
    idle_since = time.monotonic()
    while True:
        # Blocks on Redis for the next job, and returns after 1 s without one to check the split job's state.
        worked = Worker([queue], connection=queue.connection).work(max_idle_time=1, logging_level="WARNING")
        if Job.objects.get(pk=arguments["job_id"]).state in Job.FINISHED_STATES:
            break
        if worked or queue.count or queue.started_job_registry.count or queue.deferred_job_registry.count:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > SPLIT_IDLE_LIMIT:
            raise BenchmarkError(
                f"The split job {arguments['job_id']} did not end, and for {SPLIT_IDLE_LIMIT} s RQ had no "
                "job queued, deferred or started: RQ lost its part jobs or its final job."
            )
    return {}


def _step_split_outcome(arguments: dict) -> dict:
    from aip.models import Job

    job = Job.objects.get(pk=arguments["job_id"])
    if job.state != Job.State.SUCCEEDED:
        raise BenchmarkError(f"The split job {job.pk} ended {job.state}: {job.error}")
    parts = list(job.parts.order_by("pk"))
    return {
        "finished_at": job.finished_at.timestamp(),
        "packages": job.objects_done,
        "bytes_written": job.bytes_done,
        "parts": len(parts),
        "jobs": [_job_times(job, "parent")] + [_job_times(part, "part") for part in parts],
    }


def _job_times(job, role: str) -> dict:
    """Return when ``job`` was created, started and finished, as POSIX timestamps, with its objects and worker."""
    return {
        "job": job.pk,
        "role": role,
        "objects": job.objects_done,
        "worker": job.worker_name,
        **{
            name: getattr(job, name).timestamp() if getattr(job, name) else None
            for name in ("created_at", "started_at", "finished_at")
        },
    }


def _step_incremental_export(arguments: dict) -> dict:
    from aip.options import ExportOptions
    from aip.selectors import site_get
    from aip.services.export import object_export

    updated_after = datetime.fromtimestamp(arguments["updated_after"], tz=timezone.utc)
    full = _site_package(Path(arguments["folder"]))
    path = full.parent.parent / "incremental" / full.name
    options = ExportOptions(recursive=True, updated_after=updated_after)
    result = object_export(obj=site_get(), path=path, options=options)
    return {"packages": len(result.packages), "unchanged": len(result.unchanged), "bytes_written": result.bytes_written}


BACKUP_SCHEDULE = "benchmark"


def _step_full_backup(arguments: dict) -> dict:
    from aip.models import BackupSchedule

    schedule = BackupSchedule.objects.create(
        name=BACKUP_SCHEDULE, handle="", recursive=True, incremental=True, storage="aips", folder="backups", keep=2,
        eperson_email=ADMIN_EMAIL,
    )
    return _backup_run(schedule)


def _step_incremental_backup(arguments: dict) -> dict:
    from aip.models import BackupSchedule

    return _backup_run(BackupSchedule.objects.get(name=BACKUP_SCHEDULE))


def _backup_run(schedule) -> dict:
    """Run one backup of ``schedule`` in this process, as a worker would, and return its counts."""
    from django.utils import timezone

    from aip.models import Backup, Job
    from aip.services.schedules import backup_start

    # Backup folders are named to the second; a second backup within the same second takes the next one.
    latest = Backup.objects.filter(schedule=schedule).order_by("-snapshot_at").first()
    when = timezone.now()
    if latest is not None and when - latest.snapshot_at < timedelta(seconds=1):
        when = latest.snapshot_at + timedelta(seconds=1)
    job = backup_start(schedule, when=when)
    job.refresh_from_db()
    if job.state != Job.State.SUCCEEDED:
        raise BenchmarkError(f"Backup job {job.pk} ended {job.state}: {job.error}")
    backup = job.backup
    return {
        "packages": backup.packages,
        "packages_written": backup.packages_written,
        "packages_copied": backup.packages_copied,
        "bytes_written": backup.bytes,
    }


def _step_restore(arguments: dict) -> dict:
    from aip.options import IngestOptions
    from aip.services.ingest import package_ingest

    options = IngestOptions(restore=True, replace=True, recursive=True)
    report = package_ingest(path=_site_package(Path(arguments["folder"])), options=options, eperson_email=ADMIN_EMAIL)
    return {"packages": len(report.created) + len(report.replaced), "bytes_written": report.bytes_stored}


def _bitstream_files(worker: int, workers: int) -> list[Path]:
    from django.conf import settings

    root = Path(settings.BITSTREAM_ROOT)
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return files[worker::workers]


def _copy_files(arguments: dict, *, with_md5: bool) -> dict:
    # Each baseline writes new files, as export and restore do. On a virtual machine, writing
    # over the files of the previous baseline took a third of the time of writing new files.
    baseline = "copy_md5" if with_md5 else "copy"
    target_dir = Path(arguments["folder"]) / "copies" / baseline / str(arguments["worker"])
    target_dir.mkdir(parents=True, exist_ok=True)
    copied = 0
    for index, source in enumerate(_bitstream_files(arguments["worker"], arguments["workers"])):
        digest = hashlib.md5() if with_md5 else None
        with source.open("rb") as reader, (target_dir / str(index)).open("wb") as writer:
            while chunk := reader.read(CHUNK_SIZE):
                if digest is not None:
                    digest.update(chunk)
                writer.write(chunk)
                copied += len(chunk)
    return {"bytes_read": copied, "bytes_written": copied}


CHILD_STEPS = {
    "prepare": _step_prepare,
    "generate": _step_generate,
    "export": _step_export,
    "split_enqueue": _step_split_enqueue,
    "rq_worker": _step_rq_worker,
    "split_outcome": _step_split_outcome,
    "incremental_export": _step_incremental_export,
    "full_backup": _step_full_backup,
    "incremental_backup": _step_incremental_backup,
    "restore": _step_restore,
    "copy": lambda arguments: _copy_files(arguments, with_md5=False),
    "copy_md5": lambda arguments: _copy_files(arguments, with_md5=True),
}


if __name__ == "__main__":
    _child_main(sys.argv[1], json.loads(sys.argv[2]))
