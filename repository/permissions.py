"""Decide "may this person do this to that object?" from resource policies.

A policy grants its action to a group or a person between its start and end dates
(inclusive, either may be open). A person belongs to every group that lists them
as a member, to every group that lists one of those groups as a member group, and
so on upwards, and everyone belongs to Anonymous. Members of Administrator may do
everything.
"""
from __future__ import annotations

from datetime import date

from django.db.models import Q
from django.utils import timezone

from repository.models import EPerson, Group, ResourcePolicy, object_kwargs


def groups_of(person: EPerson | None) -> set[int]:
    """Return the ids of every group ``person`` belongs to, directly or through member groups."""
    found = set(Group.objects.filter(name=Group.ANONYMOUS).values_list("id", flat=True))
    if person is None:
        return found
    frontier = set(person.groups.values_list("id", flat=True))
    while frontier:
        found |= frontier
        parents = set(Group.objects.filter(member_groups__in=frontier).values_list("id", flat=True))
        frontier = parents - found
    return found


def is_administrator(person: EPerson | None) -> bool:
    if person is None:
        return False
    administrator = Group.objects.filter(name=Group.ADMINISTRATOR).values_list("id", flat=True).first()
    return administrator is not None and administrator in groups_of(person)


def authorized(person: EPerson | None, obj, action: int, *, on: date | None = None) -> bool:
    """Tell whether ``person`` (None: an anonymous visitor) may perform ``action`` on ``obj`` on a day."""
    if is_administrator(person):
        return True
    day = on or timezone.now().date()
    subject = Q(group_id__in=groups_of(person))
    if person is not None:
        subject |= Q(eperson=person)
    in_effect = (Q(start_date__isnull=True) | Q(start_date__lte=day)) & (Q(end_date__isnull=True) | Q(end_date__gte=day))
    return ResourcePolicy.objects.filter(subject & in_effect, action=action, **object_kwargs(obj)).exists()
