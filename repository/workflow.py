"""Move submitted items through their collection's approval workflow, as DSpace's basic workflow does.

A collection has up to three steps, each run by the group in ``Collection.workflow_step_<n>``:
1 "review" (accept or reject), 2 "check" (edit metadata, accept or reject) and 3 "final edit"
(edit metadata, commit). Steps without a group are skipped. A submitted item waits in the
first step that has a group. A member of that group, or an administrator, claims it and then
approves it, which moves it to the next step with a group or, after the last one, installs it.
Rejecting ends the workflow: the item stays out of the archive, and its ``WorkflowItem`` stores
who rejected it and why, for the submitter.

Every service runs in one transaction and locks the workflow item's row first, so two
reviewers cannot claim or decide the same step at once. Services that act for a person take
``superuser=True`` for a Django superuser who has no EPerson: such a user acts as an
administrator but cannot own a claim, so they approve or reject only unclaimed steps.
"""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from repository.installation import installation_record
from repository.models import Collection, EPerson, Group, Item, WorkflowItem
from repository.permissions import groups_of, is_administrator

logger = logging.getLogger(__name__)


class WorkflowError(Exception):
    """A workflow action is not allowed: the item is in the wrong state, or the person may not act."""


@transaction.atomic
def item_install(*, item: Item) -> None:
    """Put ``item`` into the archive, where it is listed, exported and not withdrawn.

    Every installation of a new item goes through here, so each gets DSpace's installation
    metadata (accession and availability dates, the "Made available" provenance line). A
    restore does not install: it brings back the package's flags and metadata as they were.
    """
    installation_record(item=item, now=timezone.now())
    item.in_archive = True
    item.withdrawn = False
    # The change-tracking pre_save receiver moves last_modified forward, so that incremental
    # exports pick up the newly installed item. update_fields must name it, or it is not stored.
    item.save(update_fields=["in_archive", "withdrawn", "last_modified"])
    logger.info("item %s installed", item.uuid)


@transaction.atomic
def workflow_start(*, item: Item, collection: Collection) -> WorkflowItem | None:
    """Submit ``item`` to ``collection``: put it into the first step that has a group.

    Sets the item's owning collection. When no step has a group, installs the item at once
    and returns None. A rejected item may be submitted again: its rejected workflow item is
    deleted first. Raises ``WorkflowError`` for an item that is in the archive, withdrawn,
    or already waiting in or approved by a workflow.
    """
    if item.in_archive or item.withdrawn:
        raise WorkflowError(
            f"Cannot submit {_item_label(item)} to collection {collection}: it is already in the archive "
            "(in_archive or withdrawn is set). Only new submissions enter a workflow."
        )
    previous = WorkflowItem.objects.select_for_update().filter(item=item).first()
    if previous is not None and previous.state != WorkflowItem.State.REJECTED:
        raise WorkflowError(
            f"Cannot submit {_item_label(item)} to collection {collection}: it is already "
            f"{previous.get_state_display()} in {_step_label(previous)}."
        )
    if previous is not None:
        previous.delete()

    item.owning_collection = collection
    item.save(update_fields=["owning_collection", "last_modified"])

    first_step = _next_step(collection, after=0)
    if first_step is None:
        item_install(item=item)
        return None

    workflow_item = WorkflowItem.objects.create(
        item=item, collection=collection, step=first_step, submitter_id=item.submitter_id
    )
    logger.info(
        "item %s submitted to collection %s: waiting in step %s", item.uuid, collection.uuid, first_step
    )
    return workflow_item


@transaction.atomic
def workflow_claim(*, workflow_item: WorkflowItem, person: EPerson | None, superuser: bool = False) -> WorkflowItem:
    """Claim the current step for ``person``, so that only they may approve or reject it.

    Claiming a step one already owns changes nothing. Raises ``WorkflowError`` when the item
    is not waiting, ``person`` is not in the step's group or Administrator, or someone else
    has claimed it.
    """
    _lock(workflow_item)
    _check_waiting(workflow_item, person, "claim")
    _check_may_act(workflow_item, person, "claim", superuser=superuser)
    if workflow_item.owner_id is not None and workflow_item.owner_id != _person_id(person):
        raise WorkflowError(
            f"{_person_label(person)} cannot claim {_item_label(workflow_item.item)} in {_step_label(workflow_item)}: "
            f"{workflow_item.owner} has claimed it. Ask them to decide it or to return it to the pool."
        )

    workflow_item.owner = person
    workflow_item.save()
    logger.info("workflow item %s step %s claimed by %s", workflow_item.pk, workflow_item.step, person)
    return workflow_item


@transaction.atomic
def workflow_unclaim(*, workflow_item: WorkflowItem, person: EPerson | None, superuser: bool = False) -> WorkflowItem:
    """Return a claimed step to the pool of its group, so that another member may claim it.

    The owner and administrators may do this, and an unclaimed step is left as it is. Raises
    ``WorkflowError`` for anyone else and for an item that is not waiting.
    """
    _lock(workflow_item)
    _check_waiting(workflow_item, person, "return to the pool")
    if workflow_item.owner_id is None:
        return workflow_item
    administrator = superuser or is_administrator(person)
    if not administrator and (person is None or workflow_item.owner_id != person.pk):
        raise WorkflowError(
            f"{_person_label(person)} cannot return {_item_label(workflow_item.item)} in "
            f"{_step_label(workflow_item)} to the pool: only its owner {workflow_item.owner} "
            f"and members of {Group.ADMINISTRATOR} may."
        )

    previous_owner = workflow_item.owner
    workflow_item.owner = None
    workflow_item.save()
    logger.info(
        "workflow item %s step %s returned to the pool by %s (owner was %s)",
        workflow_item.pk,
        workflow_item.step,
        person,
        previous_owner,
    )
    return workflow_item


@transaction.atomic
def workflow_approve(
    *, workflow_item: WorkflowItem, person: EPerson | None, claim: bool = False, superuser: bool = False
) -> WorkflowItem:
    """Approve the current step: move the item to the next step with a group, or install it after the last.

    ``person`` must own the step. With ``claim``, an unclaimed step is claimed for them first.
    Raises ``WorkflowError`` when the item is not waiting, ``person`` is not in the step's
    group or Administrator, or the step is not claimed by them.
    """
    _lock(workflow_item)
    _check_waiting(workflow_item, person, "approve")
    _check_may_act(workflow_item, person, "approve", superuser=superuser)
    _check_claimed(workflow_item, person, "approve", claim=claim)

    approved_step = workflow_item.step
    next_step = _next_step(workflow_item.collection, after=approved_step)
    if next_step is None:
        # NOTE: the item is installed with the handle and metadata it already has. Nothing here mints
        # a handle or adds dc.date.accessioned and the "Made available" provenance line.
        item_install(item=workflow_item.item)
        workflow_item.state = WorkflowItem.State.INSTALLED
    else:
        workflow_item.step = next_step
        workflow_item.owner = None
    workflow_item.save()

    logger.info(
        "workflow item %s step %s approved by %s: %s",
        workflow_item.pk,
        approved_step,
        person,
        "installed" if next_step is None else f"waiting in step {next_step}",
    )
    return workflow_item


@transaction.atomic
def workflow_reject(
    *, workflow_item: WorkflowItem, person: EPerson | None, reason: str, claim: bool = False, superuser: bool = False
) -> WorkflowItem:
    """Reject the item in its current step and store ``reason`` for the submitter.

    The item stays out of the archive. ``person`` must own the step. With ``claim``, an
    unclaimed step is claimed for them first.
    Raises ``WorkflowError`` in the cases ``workflow_approve`` does and for a blank reason.
    """
    _lock(workflow_item)
    _check_waiting(workflow_item, person, "reject")
    _check_may_act(workflow_item, person, "reject", superuser=superuser)
    _check_claimed(workflow_item, person, "reject", claim=claim)
    reason = reason.strip()
    if not reason:
        raise WorkflowError(
            f"{_person_label(person)} cannot reject {_item_label(workflow_item.item)} in "
            f"{_step_label(workflow_item)}: the reason is missing. Give the submitter a reason."
        )

    workflow_item.state = WorkflowItem.State.REJECTED
    workflow_item.reason = reason
    workflow_item.save()
    logger.info("workflow item %s rejected in step %s by %s", workflow_item.pk, workflow_item.step, person)
    return workflow_item


def _lock(workflow_item: WorkflowItem) -> None:
    """Lock the row and reload it, so that a concurrent claim or decision is seen, not overwritten."""
    workflow_item.refresh_from_db(from_queryset=WorkflowItem.objects.select_for_update())


def _step_group_id(collection: Collection, step: int) -> int | None:
    return getattr(collection, f"workflow_step_{step}_id")


def _next_step(collection: Collection, *, after: int) -> int | None:
    """Return the first step after ``after`` whose group is set, or None when there is none."""
    for step in WorkflowItem.Step.values:
        if step > after and _step_group_id(collection, step) is not None:
            return step
    return None


def _check_waiting(workflow_item: WorkflowItem, person: EPerson | None, action: str) -> None:
    if workflow_item.state != WorkflowItem.State.WAITING:
        raise WorkflowError(
            f"{_person_label(person)} cannot {action} {_item_label(workflow_item.item)}: its workflow has ended, "
            f"it was {workflow_item.get_state_display()} in {_step_label(workflow_item)}."
        )


def _check_may_act(workflow_item: WorkflowItem, person: EPerson | None, action: str, *, superuser: bool) -> None:
    """Raise unless ``person`` is an administrator or, directly or through member groups, in the step's group."""
    if superuser or is_administrator(person):
        return
    group_id = _step_group_id(workflow_item.collection, workflow_item.step)
    if person is not None and group_id is not None and group_id in groups_of(person):
        return

    if group_id is None:
        # The group was deleted after the item entered this step (the foreign key is SET_NULL).
        allowed = f"the step has no group any more, so only members of {Group.ADMINISTRATOR} may"
    else:
        group = Group.objects.get(pk=group_id)
        allowed = f"only members of its group {group} or of {Group.ADMINISTRATOR} may"
    raise WorkflowError(
        f"{_person_label(person)} may not {action} {_item_label(workflow_item.item)} in "
        f"{_step_label(workflow_item)}: {allowed}."
    )


def _check_claimed(workflow_item: WorkflowItem, person: EPerson | None, action: str, *, claim: bool) -> None:
    """Raise unless ``person`` owns the step. With ``claim``, first take an unclaimed step for them."""
    if claim and workflow_item.owner_id is None:
        workflow_item.owner = person
    if workflow_item.owner_id == _person_id(person):
        return

    if workflow_item.owner_id is None:
        problem = "nobody has claimed it. Claim it first"
    else:
        problem = f"{workflow_item.owner} has claimed it. Only they may {action} it unless it is returned to the pool"
    raise WorkflowError(
        f"{_person_label(person)} cannot {action} {_item_label(workflow_item.item)} in "
        f"{_step_label(workflow_item)}: {problem}."
    )


def _person_id(person: EPerson | None) -> int | None:
    return person.pk if person is not None else None


def _person_label(person: EPerson | None) -> str:
    return str(person) if person is not None else "A user without an EPerson"


def _item_label(item: Item) -> str:
    identifier = item.handle_string or str(item.uuid)
    return f'item "{item.name}" ({identifier})' if item.name else f"item {identifier}"


def _step_label(workflow_item: WorkflowItem) -> str:
    return f"step {workflow_item.step} ({workflow_item.get_step_display()}) of collection {workflow_item.collection}"
