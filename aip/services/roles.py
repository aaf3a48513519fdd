"""Groups, people and policies as AIPs carry them.

Group names that embed a community or collection UUID (``COLLECTION_<uuid>_SUBMIT``)
are written with the object's handle instead (``COLLECTION_hdl:123456789/2_SUBMIT``)
and translated back on ingest, so they stay attached to the right object in a
database where that object has another UUID.
"""
from __future__ import annotations

import re
import uuid as uuid_module

from django.db.models import Q

from aip.mets import namespaces as ns
from aip.mets.model import GroupRecord, PersonRecord, PolicyRecord, RolesRecord
from repository.models import Collection, Community, EPerson, Group, ResourcePolicy

_NAME_WITH_ID = re.compile(r"^(COMMUNITY|COLLECTION)_([^_]+)_(.+)$")
_NAME_WITH_HANDLE = re.compile(r"^(COMMUNITY|COLLECTION)_hdl:(.+?)_([A-Z][A-Z0-9_]*)$")
_MODELS = {"COMMUNITY": Community, "COLLECTION": Collection}


def group_name_for_export(name: str) -> str:
    """Return ``name`` with an embedded object UUID replaced by that object's handle."""
    match = _NAME_WITH_ID.match(name)
    if not match:
        return name
    object_type, identifier, suffix = match.groups()
    try:
        object_uuid = uuid_module.UUID(identifier)
    except ValueError:
        return name
    obj = _MODELS[object_type].objects.filter(uuid=object_uuid).select_related("handle").first()
    if obj is None:
        return f"ORPHANED_{object_type}_GROUP_{identifier}_{suffix}"
    if obj.handle_string is None:
        return name
    return f"{object_type}_hdl:{obj.handle_string}_{suffix}"


def group_name_for_import(name: str, resolve_handle) -> str | None:
    """Return the local name of an exported group name, or None when its object does not exist yet.

    ``resolve_handle`` maps a handle to the local object or None.
    """
    match = _NAME_WITH_HANDLE.match(name)
    if not match:
        return name
    object_type, handle, suffix = match.groups()
    obj = resolve_handle(handle)
    if obj is None or obj.object_type != object_type:
        return None
    return f"{object_type}_{obj.uuid}_{suffix}"


def object_groups(obj) -> list[Group]:
    """Return the groups a community or collection AIP carries: its role groups and those named after it."""
    role_fields = ["admin_group"]
    if isinstance(obj, Collection):
        role_fields += ["submitters_group", "workflow_step_1", "workflow_step_2", "workflow_step_3"]
    ids = {getattr(obj, f"{name}_id") for name in role_fields} - {None}
    prefix = f"{obj.object_type}_{obj.uuid}_"
    groups = Group.objects.filter(id__in=ids) | Group.objects.filter(name__startswith=prefix)
    return list(groups.distinct().prefetch_related("members", "member_groups").order_by("name"))


def group_role_type(obj, group: Group) -> str | None:
    """Return the DSPACE-ROLES ``Type`` of ``group`` on ``obj`` (ADMIN, SUBMIT, WORKFLOW_STEP_n)."""
    roles = {"admin_group_id": "ADMIN"}
    if isinstance(obj, Collection):
        roles.update(
            submitters_group_id="SUBMIT",
            workflow_step_1_id="WORKFLOW_STEP_1",
            workflow_step_2_id="WORKFLOW_STEP_2",
            workflow_step_3_id="WORKFLOW_STEP_3",
        )
    for attribute, role in roles.items():
        if getattr(obj, attribute, None) == group.id:
            return role
    return None


def group_record(group: Group, *, role_type: str | None = None) -> GroupRecord:
    return GroupRecord(
        name=group_name_for_export(group.name),
        id=str(group.uuid),
        type=role_type,
        member_emails=sorted(person.email or person.netid for person in group.members.all()),
        member_group_names=sorted(group_name_for_export(member.name) for member in group.member_groups.all()),
    )


def person_record(person: EPerson, *, include_password: bool) -> PersonRecord:
    record = PersonRecord(
        id=str(person.uuid),
        email=person.email,
        netid=person.netid,
        first_name=person.first_name or None,
        last_name=person.last_name or None,
        language=person.language or None,
        can_log_in=person.can_log_in,
        require_certificate=person.require_certificate,
        self_registered=person.self_registered,
    )
    if include_password and person.password_hash:
        record.password_hash = person.password_hash
        record.password_digest_algorithm = person.password_digest_algorithm or None
        record.password_salt = person.password_salt or None
    return record


def site_roles(*, include_passwords: bool) -> RolesRecord:
    """Return every group and every person, as the SITE AIP carries them."""
    groups = Group.objects.prefetch_related("members", "member_groups").order_by("name")
    people = EPerson.objects.order_by("email", "netid", "uuid")
    return RolesRecord(
        groups=sorted((group_record(group) for group in groups), key=lambda record: record.name),
        people=[person_record(person, include_password=include_passwords) for person in people],
    )


def container_roles(obj, *, include_passwords: bool = False) -> RolesRecord:
    """Return the groups and people a community or collection AIP carries.

    DSpace carries only the object's own groups, and people only in the SITE AIP.
    Here the AIP also carries every group its policies (and, for a collection, its
    items' policies) name, the member groups of all of those, and every person they
    name, so a collection moved into another installation keeps its permissions.
    Ingest creates such borrowed groups when missing and leaves existing ones alone.
    """
    own = object_groups(obj)
    groups = _with_member_groups(own + _policy_groups(obj))
    records = [group_record(group, role_type=group_role_type(obj, group)) for group in groups]
    people = {person.id: person for group in groups for person in group.members.all()}
    people.update({person.id: person for person in _policy_people(obj)})
    person_records = [
        person_record(person, include_password=include_passwords)
        for person in sorted(people.values(), key=lambda p: (p.email or "", p.netid or "", str(p.uuid)))
    ]
    return RolesRecord(groups=sorted(records, key=lambda record: record.name), people=person_records)


def _subtree_policies(obj):
    """Return the policies of a community, or of a collection and everything its owned items hold."""
    if isinstance(obj, Collection):
        scope = (
            Q(collection=obj)
            | Q(item__owning_collection=obj)
            | Q(bundle__item__owning_collection=obj)
            | Q(bitstream__bundle__item__owning_collection=obj)
        )
        if obj.logo_id:
            scope |= Q(bitstream_id=obj.logo_id)
        return ResourcePolicy.objects.filter(scope)
    scope = Q(community=obj) | (Q(bitstream_id=obj.logo_id) if obj.logo_id else Q(pk__in=[]))
    return ResourcePolicy.objects.filter(scope)


def _policy_groups(obj) -> list[Group]:
    """Return the groups a subtree's policies name, apart from the two every installation has."""
    ids = _subtree_policies(obj).exclude(group__isnull=True).values_list("group_id", flat=True).distinct()
    return list(Group.objects.filter(id__in=ids).exclude(name__in=(Group.ANONYMOUS, Group.ADMINISTRATOR)))


def _policy_people(obj) -> list[EPerson]:
    ids = _subtree_policies(obj).exclude(eperson__isnull=True).values_list("eperson_id", flat=True).distinct()
    return list(EPerson.objects.filter(id__in=ids))


def _with_member_groups(groups: list[Group]) -> list[Group]:
    """Return ``groups`` and, transitively, their member groups, each once, ordered by name."""
    found = {group.id: group for group in groups}
    frontier = set(found)
    while frontier:
        members = Group.objects.filter(parent_groups__in=frontier).exclude(id__in=found.keys())
        frontier = set()
        for member in members:
            found[member.id] = member
            frontier.add(member.id)
    ids = list(found)
    return list(Group.objects.filter(id__in=ids).prefetch_related("members", "member_groups").order_by("name"))


def policy_record(policy: ResourcePolicy) -> PolicyRecord:
    """Return the METSRights form of one resource policy."""
    record = PolicyRecord(
        action=policy.action,
        context_class=ns.MANAGED_GRP,
        name=policy.name or None,
        description=policy.description or None,
        start_date=policy.start_date,
        end_date=policy.end_date,
    )
    if policy.eperson_id:
        record.context_class = ns.ACADEMIC_USER
        record.eperson_email = policy.eperson.email or policy.eperson.netid
    elif policy.group.name == Group.ANONYMOUS:
        record.context_class = ns.GENERAL_PUBLIC
    elif policy.group.name == Group.ADMINISTRATOR:
        record.context_class = ns.REPOSITORY_MGR
    else:
        record.group_name = group_name_for_export(policy.group.name)
    return record


def policy_records(policies) -> list[PolicyRecord]:
    """Return the policies in a canonical order, since the database keeps none that is meaningful."""
    records = [policy_record(policy) for policy in policies]
    return sorted(
        records,
        key=lambda r: (
            r.action if r.action is not None else -1,
            r.context_class,
            r.group_name or r.eperson_email or "",
            r.start_date.isoformat() if r.start_date else "",
            r.end_date.isoformat() if r.end_date else "",
            r.name or "",
            r.description or "",
        ),
    )
