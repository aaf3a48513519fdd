"""Keep ``Item.last_modified`` current when anything an item AIP carries changes.

An item's package contains its metadata, bundles, bitstreams, policies and
collection mappings, so a change to any of them moves the item's last-modified
time forward; exports that take only changed items (``updatedAfter``, incremental
backups) rely on it. Ingest suspends this tracking, because a restore brings back
the time the package states and a submit sets its own.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models import Q
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.utils import timezone

from repository.models import Bitstream, Bundle, Collection, Group, Item, MetadataValue, ResourcePolicy

_suspended: contextvars.ContextVar[bool] = contextvars.ContextVar("item_change_tracking_suspended", default=False)


@contextmanager
def change_tracking_suspended() -> Iterator[None]:
    """Leave ``last_modified`` alone inside the block (ingest sets it itself)."""
    token = _suspended.set(True)
    try:
        yield
    finally:
        _suspended.reset(token)


def _touch(**item_filter) -> None:
    if not _suspended.get():
        now = timezone.now()
        Item.objects.filter(**item_filter).update(last_modified=now, changed_at=now)


def _item_saved(sender, instance: Item, **kwargs) -> None:
    if kwargs.get("raw"):
        return
    # Ingest saves every item it creates or replaces, so this also marks restored items as changed.
    instance.changed_at = timezone.now()
    if not _suspended.get():
        instance.last_modified = instance.changed_at


def _metadata_changed(sender, instance: MetadataValue, **kwargs) -> None:
    if instance.item_id:
        _touch(pk=instance.item_id)


def _bundle_changed(sender, instance: Bundle, **kwargs) -> None:
    _touch(pk=instance.item_id)


def _bitstream_changed(sender, instance: Bitstream, **kwargs) -> None:
    if instance.bundle_id:
        _touch(bundles__id=instance.bundle_id)


def _policy_changed(sender, instance: ResourcePolicy, **kwargs) -> None:
    if instance.item_id:
        _touch(pk=instance.item_id)
    elif instance.bundle_id:
        _touch(bundles__id=instance.bundle_id)
    elif instance.bitstream_id:
        _touch(bundles__bitstreams__id=instance.bitstream_id)


def _mapping_changed(sender, instance, action: str, reverse: bool, pk_set, **kwargs) -> None:
    if not reverse:
        if action.startswith("post_"):
            _touch(pk=instance.pk)
        return
    if action == "pre_clear":
        # Django sends no primary keys with a clear, so the items are noted before it.
        instance._items_before_clear = list(instance.mapped_items.values_list("pk", flat=True))
    elif action == "post_clear":
        _touch(pk__in=getattr(instance, "_items_before_clear", []))
    elif action.startswith("post_"):
        _touch(pk__in=pk_set or [])


def _group_renamed(sender, instance: Group, **kwargs) -> None:
    """Mark changed the items whose policies name a renamed group, because their packages carry its name.

    Their DSpace last-modified time stays, as DSpace's would.
    """
    if instance.pk is None or kwargs.get("raw"):
        return
    previous = Group.objects.filter(pk=instance.pk).values_list("name", flat=True).first()
    if previous is None or previous == instance.name:
        return
    named = (
        Q(policies__group=instance)
        | Q(bundles__policies__group=instance)
        | Q(bundles__bitstreams__policies__group=instance)
    )
    item_ids = Item.objects.filter(named).values("pk")
    Item.objects.filter(pk__in=item_ids).update(changed_at=timezone.now())


def _collection_deleted(sender, instance: Collection, **kwargs) -> None:
    # Django deletes the mapping rows of a deleted collection without a signal of their own.
    _touch(mapped_collections=instance)


def connect() -> None:
    """Connect the receivers; called once from the app config."""
    pre_save.connect(_item_saved, sender=Item, dispatch_uid="item_last_modified")
    pre_save.connect(_group_renamed, sender=Group, dispatch_uid="group_renamed_touches_items")
    for model, receiver in (
        (MetadataValue, _metadata_changed),
        (Bundle, _bundle_changed),
        (Bitstream, _bitstream_changed),
        (ResourcePolicy, _policy_changed),
    ):
        post_save.connect(receiver, sender=model, dispatch_uid=f"{model.__name__}_saved_touches_item")
        post_delete.connect(receiver, sender=model, dispatch_uid=f"{model.__name__}_deleted_touches_item")
    m2m_changed.connect(_mapping_changed, sender=Item.mapped_collections.through, dispatch_uid="item_mapping_changed")
    pre_delete.connect(_collection_deleted, sender=Collection, dispatch_uid="collection_deleted_touches_items")
