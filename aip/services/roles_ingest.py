"""Create people, groups and resource policies from DSPACE-ROLES and METSRights.

People are matched by email, else netid, and groups by their translated name.
The EPerson running the ingest keeps their account and stays in Administrator;
only their UUID follows a SITE package restored in replace mode.
"""
from __future__ import annotations

import uuid as uuid_module
from collections.abc import Callable, Iterable

from aip.errors import AipError, ObjectExistsError
from aip.mets import namespaces as ns
from aip.mets.model import GroupRecord, PersonRecord, PolicyRecord, RolesRecord
from aip.services.roles import group_name_for_import
from repository.models import Collection, EPerson, Group, ResourcePolicy, object_kwargs

ROLE_FIELDS = {
    "ADMIN": "admin_group",
    "SUBMIT": "submitters_group",
    "WORKFLOW_STEP_1": "workflow_step_1",
    "WORKFLOW_STEP_2": "workflow_step_2",
    "WORKFLOW_STEP_3": "workflow_step_3",
}


def free_uuid(model, text: str | None) -> uuid_module.UUID | None:
    """Return ``text`` as a UUID when it is one and no ``model`` row uses it yet."""
    try:
        value = uuid_module.UUID(text or "")
    except ValueError:
        return None
    return None if model.objects.filter(uuid=value).exists() else value


class RolesIngester:
    """Applies DSPACE-ROLES sections for one run and records what it did."""

    def __init__(self, *, current_user: EPerson, mode: str, resolve_handle: Callable, warn: Callable[[str], None]):
        self.current_user = current_user
        self.mode = mode  # "restore", "keep" or "replace"
        self.resolve_handle = resolve_handle
        self.warn = warn
        self.changes: list[str] = []
        # People of the Administrator group before a replace emptied it, so that the log names who changed.
        self.administrators_before: set[int] = set()

    def apply(self, roles: RolesRecord, *, owner=None, is_site: bool = False, source: str) -> None:
        for person in roles.people:
            self._person(person, is_site=is_site)
        created: dict[str, Group] = {}
        for record in roles.groups:
            group = self._group(record, owner=owner, is_site=is_site, source=source)
            if group is not None:
                created[record.name] = group
        for record in roles.groups:
            if record.name in created:
                self._member_groups(created[record.name], record)

    def _person(self, record: PersonRecord, *, is_site: bool) -> None:
        existing = _find_person(record.email, record.netid)
        if existing is not None:
            if not (is_site and self.mode == "replace"):
                self.changes.append(f"EPerson {existing} left unchanged")
                return
            _take_uuid(existing, record.id)
            if existing.pk == self.current_user.pk:
                # The person running the restore keeps their account as it is; only the identifier follows the AIP.
                existing.save(update_fields=["uuid"])
                self.changes.append(f"EPerson {existing} runs this restore: account kept as it is, UUID taken from the AIP")
                return
            password_changed = bool(record.password_hash) and record.password_hash != existing.password_hash
            _person_fields(existing, record)
            existing.save()
            self.changes.append(f"EPerson {existing} updated{' (password changed)' if password_changed else ''}")
            return
        person = EPerson(uuid=free_uuid(EPerson, record.id) or uuid_module.uuid4())
        _person_fields(person, record)
        person.save()
        self.changes.append(f"EPerson {person} created")

    def _group(self, record: GroupRecord, *, owner, is_site: bool, source: str) -> Group | None:
        name = group_name_for_import(record.name, self.resolve_handle)
        if name is None:
            self.changes.append(f"Group {record.name} deferred: it is created from its object's own AIP")
            return None
        group = Group.objects.filter(name=name).first()
        borrowed = owner is not None and not _belongs_to(owner, record, name)
        if group is not None and borrowed:
            # A group a community or collection AIP carries only because its policies name it.
            self.changes.append(
                f"Group {record.name} left unchanged: it exists already, and the package carries it only because "
                "its policies name it"
            )
            return None
        if group is not None:
            if self.mode == "keep":
                self.changes.append(f"Group {record.name} left unchanged")
                return None
            if self.mode == "restore" and is_site:
                raise ObjectExistsError(
                    f"Group {name} already exists. A site AIP restores into a fresh installation with "
                    "-r -f (replace mode), or with -r -k to keep existing people and groups."
                )
            if group.name == Group.ADMINISTRATOR:
                self.administrators_before = set(group.members.values_list("pk", flat=True))
            group.members.clear()
            group.member_groups.clear()
            _take_uuid(group, record.id)
            group.save()
            self.changes.append(f"Group {record.name} replaced")
        else:
            group = Group.objects.create(name=name, uuid=free_uuid(Group, record.id) or uuid_module.uuid4())
            self.changes.append(f"Group {record.name} created")
        self._members(group, record, source=source)
        if owner is not None and record.type in ROLE_FIELDS:
            _attach_role(owner, record.type, group)
        return group

    def _members(self, group: Group, record: GroupRecord, *, source: str) -> None:
        people = []
        for email in record.member_emails:
            person = _find_person(email, email)
            if person is None:
                person = EPerson.objects.create(email=email if "@" in email else None, netid=None if "@" in email else email)
                self.warn(f"{source}: member {email} of group {record.name} was not known and was created without a password.")
            people.append(person)
        if group.name == Group.ADMINISTRATOR:
            people.append(self.current_user)
            self._administrators_report(people)
        group.members.add(*people)

    def _administrators_report(self, people: list[EPerson]) -> None:
        """List each person the package makes an administrator and each it removes, for the job log."""
        for person in {person.pk: person for person in people}.values():
            if person.pk not in self.administrators_before:
                self.changes.append(f"EPerson {person} made an administrator")
        kept = {person.pk for person in people}
        for person in EPerson.objects.filter(pk__in=self.administrators_before - kept):
            self.changes.append(f"EPerson {person} is no longer an administrator")

    def _member_groups(self, group: Group, record: GroupRecord) -> None:
        for exported_name in record.member_group_names:
            name = group_name_for_import(exported_name, self.resolve_handle)
            member = Group.objects.filter(name=name).first() if name else None
            if member is None:
                self.warn(f"Group {exported_name}, a member of {record.name}, is not in this repository; skipped.")
                continue
            group.member_groups.add(member)


def _take_uuid(row, text: str | None) -> None:
    """Give an existing person or group the UUID the package states, when no other row has it."""
    value = free_uuid(type(row), text)
    if value is not None:
        row.uuid = value


def _belongs_to(owner, record: GroupRecord, local_name: str) -> bool:
    """Tell whether a group of a community or collection AIP is that object's own group."""
    return record.type in ROLE_FIELDS or local_name.startswith(f"{owner.object_type}_{owner.uuid}_")


def _find_person(email: str | None, netid: str | None) -> EPerson | None:
    if email:
        found = EPerson.objects.filter(email__iexact=email).first()
        if found is not None:
            return found
    if netid:
        return EPerson.objects.filter(netid=netid).first()
    return None


def _person_fields(person: EPerson, record: PersonRecord) -> None:
    person.email = record.email or None
    person.netid = record.netid or None
    person.first_name = record.first_name or ""
    person.last_name = record.last_name or ""
    person.language = record.language or ""
    person.can_log_in = record.can_log_in
    person.require_certificate = record.require_certificate
    person.self_registered = record.self_registered
    # A person whose hash the package does not carry keeps the current password.
    if record.password_hash:
        person.password_hash = record.password_hash
        person.password_digest_algorithm = record.password_digest_algorithm or ""
        person.password_salt = record.password_salt or ""


def _attach_role(owner, role_type: str, group: Group) -> None:
    field = ROLE_FIELDS[role_type]
    if field != "admin_group" and not isinstance(owner, Collection):
        return
    setattr(owner, field, group)
    owner.save(update_fields=[field])


class PolicyWriter:
    """A writer of the resource policies of one ingest run, in batches.

    ``add`` checks each policy and looks up its group or person at once, so a missing
    subject raises where it did with one insert per object, but the rows wait for
    ``flush``, which inserts every pending row with one query. Found groups and people
    are kept for the run; a name not found is looked up again, since a later package
    may create it.
    """

    def __init__(self, *, resolve_handle: Callable, warn: Callable[[str], None]):
        self.resolve_handle = resolve_handle
        self.warn = warn
        self._rows: list[ResourcePolicy] = []
        self._groups: dict[str, Group] = {}
        self._people: dict[str, EPerson] = {}

    def groups_load(self, records: Iterable[PolicyRecord]) -> None:
        """Look up, with one query, the groups that ``records`` name and that this run has not found yet."""
        names = set()
        for record in records:
            if record.context_class == ns.ACADEMIC_USER:
                continue
            exported = ns.GROUP_BY_CONTEXTCLASS.get(record.context_class) or record.group_name or ""
            name = group_name_for_import(exported, self.resolve_handle)
            if name and name not in self._groups:
                names.add(name)
        if names:
            self._groups.update((group.name, group) for group in Group.objects.filter(name__in=names))

    def replace(self, obj, records: list[PolicyRecord], *, source: str) -> None:
        """Delete the policies ``obj`` has now and queue ``records`` in their place."""
        obj.policies.all().delete()
        self.add(obj, records, source=source)

    def add(self, obj, records: list[PolicyRecord], *, source: str) -> None:
        """Queue ``records`` as policies of ``obj``, which must be saved by the time of ``flush``."""
        for record in records:
            if record.action is None:
                self.warn(f"{source}: a policy with unknown permissions on {obj} was skipped.")
                continue
            self._rows.append(
                ResourcePolicy(
                    action=record.action,
                    name=record.name or "",
                    description=record.description or "",
                    start_date=record.start_date,
                    end_date=record.end_date,
                    **self._subject(record, source=source),
                    **object_kwargs(obj),
                )
            )

    def take(self) -> list[ResourcePolicy]:
        """Return the queued rows and forget them, for a caller that inserts them itself."""
        rows, self._rows = self._rows, []
        return rows

    def flush(self) -> None:
        if self._rows:
            ResourcePolicy.objects.bulk_create(self._rows)
        self._rows = []

    def _subject(self, record: PolicyRecord, *, source: str) -> dict:
        if record.context_class == ns.ACADEMIC_USER:
            return {"eperson": self._person(record.eperson_email, source=source)}
        exported = ns.GROUP_BY_CONTEXTCLASS.get(record.context_class) or record.group_name or ""
        name = group_name_for_import(exported, self.resolve_handle)
        group = self._groups.get(name) if name else None
        if group is None and name:
            group = Group.objects.filter(name=name).first()
        if group is None:
            raise AipError(
                f"{source}: a policy names the group {exported!r}, which is not in this repository. Restore the "
                "SITE AIP, or the AIP of the community or collection that owns the group, first."
            )
        self._groups[name] = group
        return {"group": group}

    def _person(self, email: str | None, *, source: str) -> EPerson:
        person = self._people.get(email or "") or _find_person(email, email)
        if person is None:
            raise AipError(
                f"{source}: a policy names the EPerson {email}, who is not in this repository. "
                "Restore the SITE AIP first (it carries every EPerson)."
            )
        self._people[email or ""] = person
        return person
