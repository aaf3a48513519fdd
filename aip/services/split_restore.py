"""Split restores: the parent job restores the containers, and part jobs restore the items.

The parent restores the site, community and collection packages in one
transaction, as a restore by one job does, but leaves out the item packages that
the collections list. It records that work as a part that succeeded, then creates a
part job per contiguous batch of item packages. Each part restores its batch in a
transaction of its own, so a failed part changes nothing, while the containers and
the other parts stay committed. Retry runs only the parts that did not succeed.

NOTE: parts lock the top object, its ancestors and the collections of their items
shared. A restore or replace of the tree or of one of those collections therefore
waits for them, but a restore or replace of one single item does not.
"""
from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from django.db import connection

from aip.models import Job
from aip.services import locks
from aip.services.ingest import item_packages_ingest
from aip.services.jobs import (
    HandOver,
    _ingest_options,
    _locked,
    _package_source,
    _Recorder,
    ingest_locked,
    ingest_record,
)
from aip.services.split import (
    carried_batches,
    contiguous_batches,
    part_succeeded_create,
    parts_hand_over,
    retried_split,
)
from aip.storage import aip_storage, staged_read, storage_files
from repository.models import Collection


def restore_start(job: Job, recorder: _Recorder) -> HandOver:
    """Restore the containers and create the part jobs; return the step that queues them and the final job."""
    earlier = retried_split(job)
    if earlier is not None:
        recorder.lines([f"The site, communities and collections were restored by job {earlier.pk}, not again."])
        handle = earlier.parts.order_by("pk").first().handle
        return parts_hand_over(job, recorder, carried_batches(earlier), handle=handle)

    report, handle = _containers_restore(job, recorder)
    entries = _item_entries(report.deferred_items)
    recorder.total(recorder.objects_done + len(entries))
    containers = part_succeeded_create(
        job,
        handle=handle,
        objects=recorder.objects_done,
        size=recorder.bytes_done,
        lines=[f"Restored by split job {job.pk} itself before its other parts started:", *report.lines()],
    )
    recorder.lines([
        f"Restored {recorder.objects_done} package(s) other than the items that collections list; part job "
        f"{containers.pk} records them."
    ])
    return parts_hand_over(job, recorder, contiguous_batches(entries, job.part_count), handle=handle)


def _containers_restore(job: Job, recorder: _Recorder):
    """Restore every package but the items in one transaction; return the report and the top object's handle."""
    options = replace(_ingest_options(job), defer_items=True)
    with _package_source(job) as path:
        report = ingest_locked(job, recorder, path, options)
        handle = job.handle or locks.top_manifest_handles(path, manifest_only=options.manifest_only)[0] or ""
    ingest_record(recorder, report)
    return report, handle


def _item_entries(deferred: list[tuple[Path, int]]) -> list[list]:
    """Return [package name, primary keys of the collections listing it] per item package, once each, in order."""
    listings: dict[str, list[int]] = {}
    for path, collection_id in deferred:
        listings.setdefault(path.name, []).append(collection_id)
    return [[name, collection_ids] for name, collection_ids in listings.items()]


def restore_part_run(job: Job, recorder: _Recorder) -> str:
    """Restore the item packages of part ``job`` in one transaction."""
    # SQLite lets one transaction write at a time, so parts cannot collide on registry rows there.
    # A second connection would also wait for the part's own transaction to end.
    options = replace(_ingest_options(job), commit_registries_apart=connection.vendor == "postgresql")
    with _locked(job, recorder, _part_keys(job)), _packages_staged(job) as packages:
        report = item_packages_ingest(
            packages=packages, options=options, eperson_email=job.eperson_email, progress=recorder
        )
    ingest_record(recorder, report)
    return ""


def _part_keys(job: Job) -> list[locks.LockKey]:
    """Return shared locks on the top object, its ancestors, the collections of the part's items and the package."""
    keys = [locks.file_key(job.storage, job.path, exclusive=False)]
    if job.handle:
        keys += locks.handle_keys(job.handle, exclusive=False)
    collection_ids = {collection_id for _name, collection_ids in job.batch for collection_id in collection_ids}
    handles = (
        Collection.objects.filter(pk__in=collection_ids, handle__isnull=False)
        .values_list("handle__handle", flat=True)
    )
    return keys + [locks.LockKey(f"handle:{handle}") for handle in handles]


@contextmanager
def _packages_staged(job: Job) -> Iterator[list[tuple[Path, list[int]]]]:
    """Yield a local path per item package of the part, with the collections listing it.

    A package missing from the folder is given as a path that does not exist, so that the
    ingest reports it as it reports a missing child package.
    """
    if not job.storage:
        folder = Path(job.path).parent
        yield [(folder / name, collection_ids) for name, collection_ids in job.batch]
        return
    storage = aip_storage(job.storage)
    folder = posixpath.dirname(job.path)
    stored = set(storage_files(storage, folder))
    with ExitStack() as stack:
        empty = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aip-missing-")))
        packages = []
        for name, collection_ids in job.batch:
            stored_name = posixpath.join(folder, name)
            local = stack.enter_context(staged_read(storage, stored_name)) if stored_name in stored else empty / name
            packages.append((local, collection_ids))
        yield packages


def restore_summary(job: Job, recorder: _Recorder) -> str:
    """Log the totals of a split restore whose parts all succeeded; there is nothing left to restore."""
    recorder.lines([
        f"Split restore done: {recorder.objects_done} object(s) created, replaced or skipped, {recorder.bytes_done} "
        f"bytes stored, by {job.parts.count()} part job(s)"
    ])
    return ""
