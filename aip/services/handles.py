"""Register restored handles and mint new ones.

New handles take the next number after the largest numeric suffix already
registered under this installation's prefix, so a restore never leaves a
sequence behind its handles and the next new object never collides.
"""
from __future__ import annotations

from django.conf import settings
from django.db.models import Max

from aip.errors import ObjectExistsError
from repository.models import Handle, Site


def _split(handle: str) -> tuple[str, str, int | None]:
    prefix, _, suffix = handle.partition("/")
    return prefix, suffix, int(suffix) if suffix.isdigit() else None


def handle_new(handle: str, resource_type: str) -> Handle:
    """Return an unsaved registry row for ``handle``, which no row has yet."""
    prefix, suffix, number = _split(handle)
    return Handle(handle=handle, prefix=prefix, suffix=suffix, suffix_number=number, resource_type=resource_type)


def handle_register(handle: str, resource_type: str) -> Handle:
    """Return the registry row for a restored handle, which must not be bound to another object."""
    record = Handle.objects.filter(handle=handle).first()
    created = record is None
    if created:
        # Another run inserting the same handle meanwhile makes this insert fail and this run roll back.
        record = handle_new(handle, resource_type)
        record.save(force_insert=True)
    if not created and _is_bound(record):
        raise ObjectExistsError(f"Handle {handle} is already in use by another object.")
    if not created and record.resource_type != resource_type:
        record.resource_type = resource_type
        record.save(update_fields=["resource_type"])
    return record


def _is_bound(record: Handle) -> bool:
    # A missing reverse one-to-one relation raises an AttributeError subclass, so hasattr is False.
    return any(hasattr(record, relation) for relation in ("site", "community", "collection", "item"))


def handle_mint(resource_type: str) -> Handle:
    """Create a new handle "<prefix>/<n>" past every numeric suffix registered under the prefix."""
    prefix = settings.HANDLE_PREFIX
    # Serializes minting between concurrent runs on PostgreSQL; SQLite locks the whole database anyway.
    list(Site.objects.select_for_update().values_list("pk", flat=True))
    largest = Handle.objects.filter(prefix=prefix).aggregate(largest=Max("suffix_number"))["largest"] or 0
    number = largest + 1
    return Handle.objects.create(
        handle=f"{prefix}/{number}", prefix=prefix, suffix=str(number), suffix_number=number, resource_type=resource_type
    )


def handle_assign(handle: str | None, resource_type: str) -> Handle:
    """Return the handle for a new object: the package's handle when given, else a new one."""
    return handle_register(handle, resource_type) if handle else handle_mint(resource_type)
