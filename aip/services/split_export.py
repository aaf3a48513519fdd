"""Split exports: the part jobs write the item packages, and the final job the containers.

Item packages are independent files, each written to a temporary name and renamed,
so a failed part leaves only complete packages behind. A rerun keeps those that
already contain what it would write. The final job writes the site, community and
collection packages, and the package of any item added since the split, only when
every part succeeded, so the top package is written last.

NOTE: each part reads the repository in its own snapshot, and the final job in
another, so the packages do not show one moment of the repository as an export by
one job does. An item moved or deleted while the parts run can leave its package
missing or stale.
"""
from __future__ import annotations

import posixpath
from contextlib import nullcontext
from pathlib import Path

from django.db.models import Q

from aip import selectors
from aip.models import Job
from aip.options import export_options
from aip.services import locks
from aip.services.export import ExportResult, items_export, leftovers_delete, object_export
from aip.services.jobs import HandOver, _export_drafts, _locked, _Recorder
from aip.services.split import carried_batches, contiguous_batches, parts_hand_over, retried_split
from aip.storage import aip_storage, staged_write, storage_files
from repository.models import Collection, Item

# Items a part reads from the database at once, so that its memory does not grow with its size.
PART_READ_BATCH = 1000


def export_start(job: Job, recorder: _Recorder) -> HandOver:
    """List the tree's items and create the part jobs; return the step that queues them and the final job."""
    earlier = retried_split(job)
    if earlier is not None:
        batches = carried_batches(earlier)
    else:
        with locks.read_snapshot():
            item_ids = tree_item_ids(selectors.object_by_handle_or_error(job.handle))
        batches = contiguous_batches(item_ids, job.part_count)
    return parts_hand_over(job, recorder, batches, handle=job.handle)


def tree_item_ids(obj) -> list[int]:
    """Return the primary keys of the items a recursive export of ``obj`` writes, once each, in package order."""
    if isinstance(obj, Item):
        return [obj.pk]
    ids: list[int] = []
    seen: set[int] = set()
    pending = [obj]
    while pending:
        current = pending.pop()
        if isinstance(current, Collection):
            for item_id in selectors.exported_items(current).values_list("pk", flat=True):
                if item_id not in seen:
                    seen.add(item_id)
                    ids.append(item_id)
            continue
        pending.extend(reversed(selectors.children_of(current)))
    return ids


def export_part_run(job: Job, recorder: _Recorder) -> str:
    """Export the items of part ``job`` into the folder of its split export."""
    options = export_options(job.options, recursive=True)
    folder, target, place = _target(job)
    handle = job.handle or selectors.site_handle()
    # The package file is locked shared, so that parts run side by side but never beside another export
    # of that file. The final job locks it exclusive.
    keys = locks.handle_keys(handle, exclusive=False) + [locks.file_key(job.storage, job.path, exclusive=False)]
    result = ExportResult()
    found = 0
    with _locked(job, recorder, keys), target as local, locks.read_snapshot():
        leftovers_delete(local)
        for start in range(0, len(job.batch), PART_READ_BATCH):
            items = _part_items(job.batch[start:start + PART_READ_BATCH])
            found += len(items)
            batch = items_export(items=items, folder=local, options=options, progress=recorder.package_written)
            _result_add(result, batch)
    recorder.events += _export_drafts(result)

    missing = len(job.batch) - found
    left_out = f", {missing} item(s) deleted or no longer archived since the split left out" if missing else ""
    unchanged = f", {len(result.unchanged)} unchanged item(s) left out" if result.unchanged else ""
    kept = f", {len(result.kept)} complete package(s) already there kept" if result.kept else ""
    recorder.lines([
        f"Exported {len(result.packages)} item package(s), {result.bytes_written} bytes, in {result.seconds:.1f} s "
        f"into {place}{unchanged}{kept}{left_out}"
    ])
    return ""


def _part_items(item_ids: list[int]) -> list[Item]:
    """Return the items of ``item_ids`` that a collection package still lists, in the order of ``item_ids``."""
    found = Item.objects.filter(pk__in=item_ids).filter(Q(in_archive=True) | Q(withdrawn=True)).select_related("handle")
    by_id = {item.pk: item for item in found}
    return [by_id[item_id] for item_id in item_ids if item_id in by_id]


def _result_add(total: ExportResult, result: ExportResult) -> None:
    total.packages += result.packages
    total.unchanged += result.unchanged
    total.kept += result.kept
    total.bytes_written += result.bytes_written
    total.seconds += result.seconds


def _target(job: Job):
    """Return the folder of the job's packages, a context manager yielding the local folder to write, and its name."""
    if job.storage:
        folder = posixpath.dirname(job.path)
        return folder, staged_write(aip_storage(job.storage), folder), f"{folder or '/'} of storage {job.storage!r}"
    folder = str(Path(job.path).parent)
    return folder, nullcontext(Path(folder)), folder


def containers_export(job: Job, recorder: _Recorder) -> str:
    """Write the site, community and collection packages, and every item package no part wrote."""
    options = export_options(job.options, recursive=True)
    folder, target, place = _target(job)
    present = _item_present_check(job, folder)
    keys = locks.export_keys(job.handle, storage=job.storage, path=job.path)
    top_name = posixpath.basename(job.path) if job.storage else Path(job.path).name
    with _locked(job, recorder, keys), target as local, locks.read_snapshot():
        obj = selectors.object_by_handle_or_error(job.handle)
        result = object_export(
            obj=obj, path=local / top_name, options=options, progress=recorder.package_written, item_present=present
        )
    recorder.events += _export_drafts(result)
    kept = f", {len(result.kept)} complete package(s) already there kept" if result.kept else ""
    recorder.lines([
        f"Final job: exported {len(result.packages)} package(s) that no part wrote (site, communities, collections, "
        f"and items added since the split), {result.bytes_written} bytes, in {result.seconds:.1f} s into {place}{kept}",
        f"Split export done: {recorder.objects_done} package(s), {recorder.bytes_done} bytes, "
        f"from {job.parts.count()} part job(s) and the final job",
    ])
    return job.path


def _item_present_check(job: Job, folder: str):
    """Return a test of whether an item package already exists in the export's folder, read once for a storage."""
    if not job.storage:
        return lambda path: path.is_file()
    names = set(storage_files(aip_storage(job.storage), folder))
    return lambda path: posixpath.join(folder, path.name) in names
