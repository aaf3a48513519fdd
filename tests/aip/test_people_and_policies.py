"""People, groups, password hashes and resource policies through export and restore.

Most tests run on a generated repository (``people_repository``), which is the
demo repository with more people, groups and policies. Its people have salted
and legacy password hashes, and among them are an external login that requires
a certificate and has no password, a person who cannot log in, and a person with
a netid and no email. Its groups are nested three deep, with an empty group
among them. Policies with start and end dates, names and descriptions sit on the
site, a community, a collection, items, bundles, bitstreams and both kinds of
logo. Permissions are compared through ``repository.permissions.authorized`` on
fixed days before, inside and after every dated window.
"""
from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from lxml import etree

from aip.services.handles import handle_mint
from repository.auth import EPersonBackend
from repository.changes import change_tracking_suspended
from repository.demo import demo_repository_build
from repository.models import (
    Bitstream,
    Bundle,
    Collection,
    Community,
    EPerson,
    Group,
    Item,
    ResourcePolicy,
    Site,
    object_kwargs,
)
from repository.passwords import dspace_hash_new
from repository.permissions import authorized
from repository.services import administrator_create
from tests.aip.conftest import (
    PERSON_FIELDS,
    ADMIN_EMAIL,
    database_snapshot,
    manifest_text,
    package_bytes,
    packager,
    repository_wipe,
    stored_files,
)

pytestmark = pytest.mark.django_db

Action = ResourcePolicy.Action

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
NS = {
    "mets": "http://www.loc.gov/METS/",
    "premis": "http://www.loc.gov/standards/premis",
}
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"

WINDOW_START = date(2020, 1, 1)
WINDOW_END = date(2020, 12, 31)
EMBARGO_START = date(2031, 1, 1)
# Days before, inside and after the 2020 window, and the first day of the embargoes' open access.
CHECK_DAYS = [date(2019, 12, 31), date(2020, 6, 15), date(2021, 1, 1), EMBARGO_START]

ADA = "ada.curator@example.org"
BJORN = "björn.reviewer@example.org"
LOCKED = "locked.out@example.org"
EXTERNAL = "external.login@example.org"
LEGACY = "chen.student@example.org"
NETID_ONLY = "gpark"
OPERATOR = "night.operator@example.org"
PASSWORDS = {
    ADA: "ada's long passphrase",
    BJORN: "Björn-lösenord-2024",
    LOCKED: "known but not allowed",
    LEGACY: "legacy md5 secret",
}
BOARD = "Faculty board"
STAFF = "Library staff"
REVIEWERS = "Reviewers"
EMPTY = "Empty group"


# --- the generated repository -------------------------------------------------------------


@dataclass
class PeopleRepository:
    """Handles of the items that some tests check one by one."""

    embargoed_item: str  # Anonymous reads it only from EMBARGO_START on
    window_item: str  # only the board reads it, and only during 2020
    unprotected_item: str  # has no policies of its own


def person_password_set(person: EPerson, password: str) -> None:
    person.password_hash, person.password_digest_algorithm, person.password_salt = dspace_hash_new(password)
    person.save()


def policy_add(obj, action: int, *, group: Group | None = None, eperson: EPerson | None = None, **extra) -> None:
    ResourcePolicy.objects.create(action=action, group=group, eperson=eperson, **extra, **object_kwargs(obj))


def people_add() -> EPerson:
    """Give the demo people passwords, add a person known only by netid, and return that person."""
    for email in (ADA, BJORN, LOCKED):
        person_password_set(EPerson.objects.get(email=email), PASSWORDS[email])
    legacy = EPerson.objects.get(email=LEGACY)
    # DSpace before 3.0 stored an unsalted MD5, which AIPs mark by leaving out the digest attribute.
    legacy.password_hash = hashlib.md5(PASSWORDS[LEGACY].encode("utf-8")).hexdigest()
    legacy.password_digest_algorithm = ""
    legacy.password_salt = ""
    legacy.save()
    return EPerson.objects.create(
        netid=NETID_ONLY, first_name="Grace", last_name="Park", language="ko", can_log_in=True
    )


def groups_nest(netid_person: EPerson) -> Group:
    """Put Library staff inside Reviewers inside a new board group, with the empty group beside Reviewers."""
    board = Group.objects.create(name=BOARD)
    board.member_groups.add(Group.objects.get(name=REVIEWERS), Group.objects.get(name=EMPTY))
    board.members.add(netid_person)
    return board


def container_policies_add(board: Group, netid_person: EPerson) -> None:
    reviewers = Group.objects.get(name=REVIEWERS)
    anonymous = Group.objects.get(name=Group.ANONYMOUS)
    science = Community.objects.get(name="Faculty of Science")
    theses = Collection.objects.get(name="Theses")

    # The guest depositor submits to Theses, so the collection's own package names them.
    theses.submitters_group.members.add(netid_person)
    science.admin_group = Group.objects.create(name=f"COMMUNITY_{science.uuid}_ADMIN")
    science.admin_group.members.add(EPerson.objects.get(email=ADA))
    science.admin_group.member_groups.add(board)
    science.save()

    policy_add(
        Site.objects.get(), Action.READ, group=board, start_date=WINDOW_START,
        name="board access", description="The board reads the site from 2020 on.",
    )
    policy_add(
        science, Action.WRITE, group=reviewers, end_date=WINDOW_END,
        name="reviewers edit", description="Reviewers edit the community pages until the end of 2020.",
    )
    policy_add(
        theses, Action.ADD, eperson=netid_person, start_date=WINDOW_START, end_date=WINDOW_END,
        name="guest deposit", description="A visiting researcher deposits during 2020.",
    )

    policy_add(
        science.logo, Action.READ, group=anonymous, start_date=WINDOW_START,
        name="logo public", description="The logo is public from 2020 on.",
    )
    policy_add(
        theses.logo, Action.READ, group=reviewers, end_date=WINDOW_END,
        name="logo draft", description="Reviewers see the draft logo until the end of 2020.",
    )


def item_policies_add(items: list[Item], board: Group, netid_person: EPerson) -> PeopleRepository:
    anonymous = Group.objects.get(name=Group.ANONYMOUS)
    staff = Group.objects.get(name=STAFF)
    empty = Group.objects.get(name=EMPTY)
    ada = EPerson.objects.get(email=ADA)
    embargoed, unprotected, window = items[2], items[3], items[4]

    ResourcePolicy.objects.filter(group=anonymous, item=embargoed).delete()
    ResourcePolicy.objects.filter(group=anonymous, bitstream__bundle__item=embargoed).delete()
    policy_add(
        embargoed, Action.READ, group=anonymous, start_date=EMBARGO_START,
        name="embargo", description="Closed until the article is published.",
    )
    for bitstream in Bitstream.objects.filter(bundle__item=embargoed):
        policy_add(bitstream, Action.READ, group=anonymous, start_date=EMBARGO_START, name="embargo")

    ResourcePolicy.objects.filter(group=anonymous, item=window).delete()
    policy_add(
        window, Action.READ, group=board, start_date=WINDOW_START, end_date=WINDOW_END,
        name="review window", description="The board reviews the item during 2020.",
    )
    original = Bundle.objects.get(item=window, name="ORIGINAL")
    policy_add(
        original, Action.READ, eperson=ada, start_date=WINDOW_START, end_date=WINDOW_END,
        name="curation", description="The curator checks the files during 2020.",
    )
    pdf, csv = original.bitstreams.order_by("position")
    ResourcePolicy.objects.filter(bitstream__in=[pdf, csv]).delete()
    policy_add(pdf, Action.READ, group=empty, start_date=WINDOW_START, end_date=WINDOW_END, description="No one yet.")
    policy_add(
        csv, Action.READ, eperson=netid_person, end_date=WINDOW_END,
        name="guest data", description="The visiting researcher reads the data until the end of 2020.",
    )
    text = Bundle.objects.get(item=items[0], name="TEXT")
    policy_add(text, Action.READ, group=staff, start_date=date(2020, 6, 1), name="staff text")

    ResourcePolicy.objects.filter(item=unprotected).delete()
    return PeopleRepository(
        embargoed_item=embargoed.handle_string,
        window_item=window.handle_string,
        unprotected_item=unprotected.handle_string,
    )


def people_repository_build() -> PeopleRepository:
    """Build the demo repository with two items per collection and add people, groups and policies."""
    demo_repository_build(seed=11, items_per_collection=2)
    with change_tracking_suspended():
        netid_person = people_add()
        board = groups_nest(netid_person)
        container_policies_add(board, netid_person)
        return item_policies_add(list(archived_items()), board, netid_person)


@pytest.fixture
def people_repository(admin) -> PeopleRepository:
    return people_repository_build()


# --- helpers ------------------------------------------------------------------------------


def package_name(object_type: str, handle: str) -> str:
    return f"{object_type}@{handle.replace('/', '-')}.zip"


def archived_items():
    """Return the items that have a handle, in handle order. Collection template items have none."""
    return Item.objects.filter(handle__isnull=False).select_related("handle").order_by("handle__suffix_number")


def site_export(folder: Path, *options: str) -> Path:
    path = folder / SITE_PACKAGE
    packager("-d", "-a", *options, "-i", SITE_HANDLE, str(path))
    return path


def site_package_export(folder: Path, *options: str) -> Path:
    """Export the SITE package alone (people, groups, site policies), without its descendants."""
    path = folder / SITE_PACKAGE
    packager("-d", *options, "-i", SITE_HANDLE, str(path))
    return path


def site_restore(folder: Path) -> None:
    packager("-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE))


def bitstream_folder_clear(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def wipe(bitstream_root: Path) -> None:
    repository_wipe()
    bitstream_folder_clear(bitstream_root)


def item_delete(item: Item) -> None:
    """Delete an item with its bundles, bitstreams and policies, leaving its stored files."""
    Bundle.objects.filter(item=item).update(primary_bitstream=None)
    item.delete()


def mets_root(path: Path) -> etree._Element:
    return etree.fromstring(manifest_text(path).encode("utf-8"))


def roles_person(root: etree._Element, email: str) -> etree._Element:
    """Return the DSPACE-ROLES Person element whose Email is ``email``."""
    matches = root.xpath("//mets:Person[mets:Email=$email]", namespaces=NS, email=email)
    assert len(matches) == 1, f"the manifest has {len(matches)} Person elements for {email}"
    return matches[0]


def roles_group_names(root: etree._Element) -> list[str]:
    return root.xpath("//mets:DSpaceRoles/mets:Groups/mets:Group/@Name", namespaces=NS)


def roles_person_keys(root: etree._Element) -> list[str]:
    """Return the email, else the netid, of every DSPACE-ROLES Person."""
    return [
        person.findtext("mets:Email", namespaces=NS) or person.findtext("mets:Netid", namespaces=NS)
        for person in root.xpath("//mets:DSpaceRoles/mets:People/mets:Person", namespaces=NS)
    ]


def login(email: str, password: str):
    return EPersonBackend().authenticate(None, username=email, password=password)



def person_fields(email: str) -> dict:
    return EPerson.objects.filter(email=email).values(*PERSON_FIELDS).get()


def password_hashes() -> dict[str, tuple[str, str, str]]:
    return {
        str(person): (person.password_hash, person.password_digest_algorithm, person.password_salt)
        for person in EPerson.objects.all()
    }


def group_rows() -> dict[str, tuple[list[str], list[str]]]:
    return {
        group.name: (
            sorted(str(person) for person in group.members.all()),
            sorted(member.name for member in group.member_groups.all()),
        )
        for group in Group.objects.all()
    }


# --- permissions and policies -------------------------------------------------------------


def person_key(person: EPerson | None) -> str:
    return "anonymous" if person is None else str(person)


def permission_table(objects: list[tuple[str, object]]) -> dict[tuple[str, str, date], bool]:
    """Return whether each person, and an anonymous visitor, may READ each object on each of CHECK_DAYS."""
    subjects = [None, *EPerson.objects.order_by("email", "netid")]
    table = {}
    for subject in subjects:
        for key, obj in objects:
            for day in CHECK_DAYS:
                table[(person_key(subject), key, day)] = authorized(subject, obj, Action.READ, on=day)
    return table


def content_objects() -> list[tuple[str, object]]:
    """Return every archived item by handle and every file of those items by bitstream UUID."""
    objects: list[tuple[str, object]] = [(item.handle_string, item) for item in archived_items()]
    bitstreams = Bitstream.objects.filter(bundle__item__handle__isnull=False).order_by("uuid")
    objects += [(str(bitstream.uuid), bitstream) for bitstream in bitstreams]
    return objects


def logo_objects() -> list[tuple[str, object]]:
    return [(str(logo.uuid), logo) for logo in Bitstream.objects.filter(bundle__isnull=True).order_by("uuid")]


POLICY_KINDS = [
    "site", "community", "collection", "item", "bundle", "bitstream", "community logo", "collection logo",
]


def policy_object(policy: ResourcePolicy) -> tuple[str, tuple]:
    """Return the kind of a policy's object and a key for it that a restore keeps."""
    if policy.site_id:
        return "site", ()
    if policy.community_id:
        return "community", (str(policy.community.uuid),)
    if policy.collection_id:
        return "collection", (str(policy.collection.uuid),)
    if policy.item_id:
        return "item", (policy.item.handle_string,)
    if policy.bundle_id:
        # A restore gives bundles new UUIDs, so a bundle is known by its item and name.
        return "bundle", (policy.bundle.item.handle_string, policy.bundle.name)
    bitstream = policy.bitstream
    if bitstream.bundle_id:
        return "bitstream", (str(bitstream.uuid),)
    if Community.objects.filter(logo=bitstream).exists():
        return "community logo", (str(bitstream.uuid),)
    return "collection logo", (str(bitstream.uuid),)


def policy_rows(kinds: list[str] = POLICY_KINDS) -> list[tuple]:
    """Return every policy on an object of one of ``kinds``: object, action, subject, dates, name, description."""
    rows = []
    policies = ResourcePolicy.objects.select_related(
        "group", "eperson", "community", "collection", "item__handle", "bundle__item__handle", "bitstream"
    )
    for policy in policies:
        kind, key = policy_object(policy)
        if kind not in kinds:
            continue
        rows.append(
            (
                kind,
                key,
                policy.action,
                policy.group.name if policy.group else None,
                str(policy.eperson) if policy.eperson else None,
                policy.start_date,
                policy.end_date,
                policy.name,
                policy.description,
            )
        )
    return sorted(rows, key=repr)


def fully_described(row: tuple) -> bool:
    """Tell whether a policy row has a date, a name and a description."""
    _, _, _, _, _, start, end, name, description = row
    return bool((start or end) and name and description)


# --- site round trip with passwords -------------------------------------------------------


@dataclass
class Roundtrip:
    first: Path
    second: Path
    policies: list[tuple]


def site_roundtrip(tmp_path: Path, bitstream_root: Path) -> Roundtrip:
    """Export the site with password hashes, wipe, restore with -r -a -f, and export again."""
    policies = policy_rows()
    first = tmp_path / "before"
    site_export(first, "-o", "passwords=true")
    wipe(bitstream_root)
    site_restore(first)
    second = tmp_path / "after"
    site_export(second, "-o", "passwords=true")
    return Roundtrip(first=first, second=second, policies=policies)


@pytest.fixture
def roundtrip(people_repository, tmp_path, bitstream_storage) -> Roundtrip:
    return site_roundtrip(tmp_path, bitstream_storage)


def test_site_roundtrip_identical(roundtrip):
    before = package_bytes(roundtrip.first)
    after = package_bytes(roundtrip.second)

    assert sorted(after) == sorted(before)
    for name, content in before.items():
        assert after[name] == content, f"{name} differs between the export before and after the restore"


def test_site_roundtrip_same_permissions(people_repository, tmp_path, bitstream_storage):
    before = permission_table(content_objects())

    site_roundtrip(tmp_path, bitstream_storage)

    assert permission_table(content_objects()) == before


def test_site_roundtrip_same_logo_permissions(people_repository, tmp_path, bitstream_storage):
    before = permission_table(logo_objects())

    site_roundtrip(tmp_path, bitstream_storage)

    assert permission_table(logo_objects()) == before


@pytest.mark.parametrize(
    "kind",
    [
        *POLICY_KINDS[:6],
        pytest.param("community logo"),
        pytest.param("collection logo"),
    ],
)
def test_metsrights_roundtrip(roundtrip, kind):
    before = [row for row in roundtrip.policies if row[0] == kind]
    assert any(fully_described(row) for row in before), f"the generated {kind} has no dated, named, described policy"

    assert policy_rows([kind]) == before


def test_item_without_policies_restored_without(roundtrip, people_repository):
    item = Item.objects.get(handle__handle=people_repository.unprotected_item)

    assert list(item.policies.all()) == []


def test_item_without_policies_not_readable(roundtrip, people_repository):
    item = Item.objects.get(handle__handle=people_repository.unprotected_item)

    assert authorized(None, item, Action.READ, on=date(2021, 1, 1)) is False


def test_nested_groups_restored(people_repository, tmp_path, bitstream_storage):
    before = group_rows()

    site_roundtrip(tmp_path, bitstream_storage)

    assert group_rows() == before


def test_people_restored(people_repository, tmp_path, bitstream_storage):
    before = list(EPerson.objects.order_by("email", "netid").values(*PERSON_FIELDS))

    site_roundtrip(tmp_path, bitstream_storage)

    # The administrator who runs the restore is created by the wipe, with no DSpace hash.
    after = list(EPerson.objects.order_by("email", "netid").values(*PERSON_FIELDS))
    expected = [row for row in before if row["email"] != ADMIN_EMAIL]
    assert [row for row in after if row["email"] != ADMIN_EMAIL] == expected


def test_community_admin_group_restored(roundtrip):
    science = Community.objects.get(name="Faculty of Science")

    assert science.admin_group.name == f"COMMUNITY_{science.uuid}_ADMIN"
    assert [person.email for person in science.admin_group.members.all()] == [ADA]
    assert [group.name for group in science.admin_group.member_groups.all()] == [BOARD]


# --- time zone ----------------------------------------------------------------------------


@pytest.fixture
def auckland_roundtrip(people_repository, tmp_path, bitstream_storage, settings) -> Roundtrip:
    """Export in UTC, then wipe, restore and export again with the server in Auckland (UTC+12 or +13)."""
    policies = policy_rows()
    first = tmp_path / "before"
    site_export(first, "-o", "passwords=true")
    settings.TIME_ZONE = "Pacific/Auckland"
    with timezone.override("Pacific/Auckland"):
        wipe(bitstream_storage)
        site_restore(first)
        second = tmp_path / "after"
        site_export(second, "-o", "passwords=true")
    return Roundtrip(first=first, second=second, policies=policies)


def test_policy_dates_auckland(auckland_roundtrip):
    # Logos are left out here: their policies have their own tests.
    kinds = POLICY_KINDS[:6]
    before = [row for row in auckland_roundtrip.policies if row[0] in kinds]

    assert policy_rows(kinds) == before


def test_embargo_opens_same_day_auckland(auckland_roundtrip, people_repository):
    item = Item.objects.get(handle__handle=people_repository.embargoed_item)

    assert authorized(None, item, Action.READ, on=EMBARGO_START - timedelta(days=1)) is False
    assert authorized(None, item, Action.READ, on=EMBARGO_START) is True


def test_window_same_days_auckland(auckland_roundtrip, people_repository):
    item = Item.objects.get(handle__handle=people_repository.window_item)
    board_member = EPerson.objects.get(netid=NETID_ONLY)

    assert authorized(board_member, item, Action.READ, on=WINDOW_START - timedelta(days=1)) is False
    assert authorized(board_member, item, Action.READ, on=WINDOW_START) is True
    assert authorized(board_member, item, Action.READ, on=WINDOW_END) is True
    assert authorized(board_member, item, Action.READ, on=WINDOW_END + timedelta(days=1)) is False


def test_site_roundtrip_auckland_identical(auckland_roundtrip):
    before = package_bytes(auckland_roundtrip.first)
    after = package_bytes(auckland_roundtrip.second)

    assert sorted(after) == sorted(before)
    for name, content in before.items():
        assert after[name] == content, f"{name} differs between the UTC export and the Auckland export"


# --- passwords ----------------------------------------------------------------------------


def test_site_export_salted_hash(people_repository, tmp_path):
    ada = EPerson.objects.get(email=ADA)
    path = site_package_export(tmp_path, "-o", "passwords=true")

    element = roles_person(mets_root(path), ADA).find("mets:PasswordHash", namespaces=NS)

    assert element is not None
    assert element.text == ada.password_hash
    assert element.get("digest") == "SHA-512"
    assert element.get("salt") == ada.password_salt


def test_site_export_legacy_hash(people_repository, tmp_path):
    path = site_package_export(tmp_path, "-o", "passwords=true")

    element = roles_person(mets_root(path), LEGACY).find("mets:PasswordHash", namespaces=NS)

    assert element is not None
    assert element.text == hashlib.md5(PASSWORDS[LEGACY].encode("utf-8")).hexdigest()
    assert element.get("digest") is None
    assert element.get("salt") is None


def test_site_export_no_hash_without_password(people_repository, tmp_path):
    path = site_package_export(tmp_path, "-o", "passwords=true")

    assert roles_person(mets_root(path), EXTERNAL).find("mets:PasswordHash", namespaces=NS) is None


@pytest.mark.parametrize("options", [(), ("-o", "passwords=false")], ids=["no-option", "passwords-false"])
def test_export_without_passwords_no_hash(people_repository, tmp_path, options):
    assert EPerson.objects.exclude(password_hash="").count() == 4

    site_export(tmp_path, *options)

    packages = package_bytes(tmp_path)
    assert len(packages) == 1 + Community.objects.count() + Collection.objects.count() + archived_items().count()
    for name in packages:
        assert "PasswordHash" not in manifest_text(tmp_path / name), f"{name} carries a password hash"


@pytest.fixture
def people_restore(people_repository, tmp_path) -> Path:
    """Export the SITE package alone with password hashes, wipe, restore it with -r -f, and return the package."""
    path = site_package_export(tmp_path, "-o", "passwords=true")
    repository_wipe()
    packager("-r", "-f", "-u", "-i", SITE_HANDLE, str(path))
    return path


def test_netid_only_person_restored(people_restore):
    person = EPerson.objects.get(netid=NETID_ONLY)

    assert person.email is None
    assert (person.first_name, person.last_name, person.language) == ("Grace", "Park", "ko")
    assert BOARD in person.groups.values_list("name", flat=True)


def test_external_login_restored(people_restore):
    person = EPerson.objects.get(email=EXTERNAL)

    assert person.require_certificate is True
    assert person.can_log_in is False
    assert person.password_hash == ""


@pytest.mark.parametrize("email", [ADA, BJORN])
def test_restored_password_logs_in(people_restore, email):
    user = login(email, PASSWORDS[email])

    assert user is not None
    assert user.eperson.email == email


@pytest.mark.parametrize("email", [ADA, BJORN, LEGACY])
def test_restored_wrong_password_rejected(people_restore, email):
    assert login(email, PASSWORDS[email] + "x") is None


def test_restored_legacy_md5_logs_in(people_restore):
    user = login(LEGACY, PASSWORDS[LEGACY])

    assert user is not None
    assert user.eperson.email == LEGACY


def test_restored_locked_person_rejected(people_restore):
    assert EPerson.objects.get(email=LOCKED).password_hash != ""
    assert login(LOCKED, PASSWORDS[LOCKED]) is None


@pytest.fixture(params=[(), ("-o", "passwords=false")], ids=["no-option", "passwords-false"])
def hashless_live_restore(request, people_repository, tmp_path) -> dict[str, tuple[str, str, str]]:
    """Export without hashes, change a password, restore over the live repository, and return the hashes it had."""
    site_export(tmp_path, *request.param)
    person_password_set(EPerson.objects.get(email=BJORN), "björn changed it after the backup")
    hashes = password_hashes()
    site_restore(tmp_path)
    return hashes


def test_hashless_restore_keeps_hashes(hashless_live_restore):
    assert password_hashes() == hashless_live_restore


def test_hashless_restore_keeps_new_password(hashless_live_restore):
    assert login(BJORN, "björn changed it after the backup") is not None


# --- site restore over a live installation ------------------------------------------------


@dataclass
class LiveRestore:
    output: str
    package: Path
    newcomer: dict
    admin_user_id: int


ADMIN_NEW_PASSWORD = "the administrator changed it"
EXTERNAL_NEW_PASSWORD = "set after the backup"


@pytest.fixture
def live_restore(people_repository, tmp_path, capsys) -> LiveRestore:
    """Restore a site backup with -r -a -f over the repository it came from, changed since.

    The backup is made by another administrator while the one who restores it is
    not in Administrator and has an old password. Afterwards that administrator is
    appointed again with a new password, Ada changes her name and password, a person
    without a password gets one, a newcomer registers, and one person and one group
    are deleted.
    """
    administrator_create(email=OPERATOR, password="operator password")
    admin = EPerson.objects.get(email=ADMIN_EMAIL)
    person_password_set(admin, "the old administrator password")
    Group.objects.get(name=Group.ADMINISTRATOR).members.remove(admin)
    folder = tmp_path / "export"
    call_command(
        "packager", "-t", "AIP", "-e", OPERATOR, "-d", "-a", "-o", "passwords=true", "-i", SITE_HANDLE,
        str(folder / SITE_PACKAGE),
    )

    administrator_create(email=ADMIN_EMAIL, password=ADMIN_NEW_PASSWORD)
    person_password_set(EPerson.objects.get(email=ADMIN_EMAIL), ADMIN_NEW_PASSWORD)
    person_password_set(EPerson.objects.get(email=EXTERNAL), EXTERNAL_NEW_PASSWORD)
    ada = EPerson.objects.get(email=ADA)
    ada.last_name = "Renamed"
    ada.save()
    person_password_set(ada, "ada changed it after the backup")
    newcomer = EPerson.objects.create(
        email="newcomer@example.org", first_name="New", last_name="Comer", can_log_in=True
    )
    person_password_set(newcomer, "newcomer password")
    EPerson.objects.get(email=LOCKED).delete()
    Group.objects.get(name=EMPTY).delete()
    capsys.readouterr()

    site_restore(folder)

    return LiveRestore(
        output=capsys.readouterr().out,
        package=folder / SITE_PACKAGE,
        newcomer=person_fields("newcomer@example.org"),
        admin_user_id=get_user_model().objects.get(username=ADMIN_EMAIL).pk,
    )


def test_live_restore_keeps_newcomer(live_restore):
    assert person_fields("newcomer@example.org") == live_restore.newcomer


def test_live_restore_newcomer_logs_in(live_restore):
    assert login("newcomer@example.org", "newcomer password") is not None


def test_live_restore_absent_hash_keeps_password(live_restore):
    root = mets_root(live_restore.package)
    assert roles_person(root, EXTERNAL).find("mets:PasswordHash", namespaces=NS) is None

    assert EPerson.objects.get(email=EXTERNAL).check_password(EXTERNAL_NEW_PASSWORD) is True


def test_live_restore_recreates_deleted_person(live_restore):
    person = EPerson.objects.get(email=LOCKED)

    assert person.can_log_in is False
    assert person.check_password(PASSWORDS[LOCKED]) is True


def test_live_restore_lists_people(live_restore):
    for key in roles_person_keys(mets_root(live_restore.package)):
        if key == ADMIN_EMAIL:
            expected = f"EPerson {key} runs this restore: account kept as it is"
        elif key == LOCKED:
            expected = f"EPerson {key} created"
        else:
            expected = f"EPerson {key} updated"
        assert expected in live_restore.output, f"the output does not say: {expected}"


def test_live_restore_lists_groups(live_restore):
    for name in roles_group_names(mets_root(live_restore.package)):
        expected = f"Group {name} created" if name == EMPTY else f"Group {name} replaced"
        assert expected in live_restore.output, f"the output does not say: {expected}"


def test_live_restore_admin_stays_administrator(live_restore):
    members = Group.objects.get(name=Group.ADMINISTRATOR).members.values_list("email", flat=True)

    assert ADMIN_EMAIL in members


def test_live_restore_admin_keeps_dspace_password(live_restore):
    assert login(ADMIN_EMAIL, ADMIN_NEW_PASSWORD) is not None
    assert login(ADMIN_EMAIL, "the old administrator password") is None


def test_live_restore_admin_keeps_django_password(live_restore):
    user = get_user_model().objects.get(pk=live_restore.admin_user_id)

    assert user.check_password(ADMIN_NEW_PASSWORD) is True


def test_live_restore_updates_person(live_restore):
    person = EPerson.objects.get(email=ADA)

    assert person.last_name == "Curator"
    assert person.check_password(PASSWORDS[ADA]) is True


def test_site_plain_restore_fails(people_repository, tmp_path, bitstream_storage):
    path = site_package_export(tmp_path, "-o", "passwords=true")
    snapshot = database_snapshot()
    people = list(EPerson.objects.order_by("email", "netid").values(*PERSON_FIELDS))
    groups = group_rows()
    files = stored_files(bitstream_storage)

    with pytest.raises(CommandError) as raised:
        packager("-r", str(path))

    message = str(raised.value)
    assert "Group Administrator already exists" in message
    assert "-r -f" in message
    assert database_snapshot() == snapshot
    assert list(EPerson.objects.order_by("email", "netid").values(*PERSON_FIELDS)) == people
    assert group_rows() == groups
    assert stored_files(bitstream_storage) == files


# --- keep existing (-r -k) on a site ------------------------------------------------------


@dataclass
class KeepRestore:
    output: str
    ada: dict
    groups: dict


@pytest.fixture
def keep_restore(people_repository, tmp_path, capsys) -> KeepRestore:
    """Export the SITE package, change the repository, and restore the package with -r -k.

    The changes: Ada gets another first name and password, Björn leaves Library
    staff, and the locked-out person and the empty group are deleted.
    """
    path = site_package_export(tmp_path, "-o", "passwords=true")
    ada = EPerson.objects.get(email=ADA)
    ada.first_name = "Adaline"
    ada.save()
    person_password_set(ada, "ada changed it")
    Group.objects.get(name=STAFF).members.remove(EPerson.objects.get(email=BJORN))
    EPerson.objects.get(email=LOCKED).delete()
    Group.objects.get(name=EMPTY).delete()
    state = KeepRestore(output="", ada=person_fields(ADA), groups=group_rows())
    capsys.readouterr()

    packager("-r", "-k", "-u", str(path))

    state.output = capsys.readouterr().out
    return state


def test_keep_creates_missing_person(keep_restore):
    person = EPerson.objects.get(email=LOCKED)

    assert (person.first_name, person.last_name) == ("Eve", "Locked")
    assert person.check_password(PASSWORDS[LOCKED]) is True


def test_keep_creates_missing_group(keep_restore):
    assert Group.objects.filter(name=EMPTY).exists()


def test_keep_leaves_person_unchanged(keep_restore):
    assert person_fields(ADA) == keep_restore.ada


def test_keep_leaves_groups_unchanged(keep_restore):
    rows = group_rows()
    del rows[EMPTY]

    assert rows == keep_restore.groups


def test_keep_lists_people(keep_restore):
    assert f"EPerson {LOCKED} created" in keep_restore.output
    assert f"EPerson {ADA} left unchanged" in keep_restore.output


def test_keep_lists_groups(keep_restore):
    assert f"Group {EMPTY} created" in keep_restore.output
    assert f"Group {STAFF} left unchanged" in keep_restore.output


# --- group-name translation ---------------------------------------------------------------


def test_group_name_exported_with_handle(demo, tmp_path):
    theses = Collection.objects.get(name="Theses")
    path = tmp_path / package_name("COLLECTION", theses.handle_string)
    packager("-d", "-i", theses.handle_string, str(path))

    root = mets_root(path)
    group = root.xpath("//mets:Group[@Type='SUBMIT']", namespaces=NS)

    assert theses.submitters_group.name == f"COLLECTION_{theses.uuid}_SUBMIT"
    assert [element.get("Name") for element in group] == [f"COLLECTION_hdl:{theses.handle_string}_SUBMIT"]
    assert not [name for name in roles_group_names(root) if str(theses.uuid) in name]


def test_group_name_site_package_uses_handle(demo, tmp_path):
    theses = Collection.objects.get(name="Theses")

    names = roles_group_names(mets_root(site_package_export(tmp_path)))

    assert f"COLLECTION_hdl:{theses.handle_string}_SUBMIT" in names
    assert f"COLLECTION_{theses.uuid}_SUBMIT" not in names


def test_group_name_orphaned(demo, tmp_path):
    missing = "6f1c3f0e-2b7a-4c43-9d0e-4f3a2b1c0d9e"
    Group.objects.create(name=f"COLLECTION_{missing}_SUBMIT")

    names = roles_group_names(mets_root(site_package_export(tmp_path)))

    assert f"ORPHANED_COLLECTION_GROUP_{missing}_SUBMIT" in names
    assert f"COLLECTION_{missing}_SUBMIT" not in names


@pytest.fixture
def submitted_collection(demo, tmp_path, bitstream_storage) -> tuple[str, Collection]:
    """Export Theses alone, wipe, submit it (-s) under a new community, and return the old UUID and the copy."""
    theses = Collection.objects.get(name="Theses")
    old_uuid = str(theses.uuid)
    path = tmp_path / package_name("COLLECTION", theses.handle_string)
    packager("-d", "-i", theses.handle_string, str(path))
    wipe(bitstream_storage)
    community = Community.objects.create(handle=handle_mint("COMMUNITY"), name="Receiving")

    packager("-s", "-p", community.handle_string, str(path))

    return old_uuid, Collection.objects.get()


def test_group_name_submit_takes_new_uuid(submitted_collection):
    old_uuid, collection = submitted_collection

    assert str(collection.uuid) != old_uuid
    assert Group.objects.filter(name=f"COLLECTION_{collection.uuid}_SUBMIT").exists()
    assert not Group.objects.filter(name__contains=old_uuid).exists()
    assert not Group.objects.filter(name__contains="hdl:").exists()


def test_group_name_submit_attaches_submitters(submitted_collection):
    _, collection = submitted_collection

    assert collection.submitters_group.name == f"COLLECTION_{collection.uuid}_SUBMIT"
    assert collection.admin_group.name == f"COLLECTION_{collection.uuid}_ADMIN"


# --- moving one collection to another installation ----------------------------------------


@dataclass
class CollectionMove:
    path: Path
    community: str
    handle: str
    groups: dict[str, tuple[list[str], list[str]]]  # role -> (member people, member groups)
    people: dict[str, tuple[str, str, str]]  # email or netid -> (first name, last name, language)
    collection_policies: list[tuple]
    item_policies: list[tuple]
    items: list[str]


ROLE_FIELDS = ["admin_group", "submitters_group"]


def collection_groups(collection: Collection) -> dict[str, tuple[list[str], list[str]]]:
    """Return the members and member groups of each role group of ``collection``, by role field."""
    groups = {}
    for field in ROLE_FIELDS:
        group = getattr(collection, field)
        groups[field] = (
            sorted(str(person) for person in group.members.all()),
            sorted(member.name for member in group.member_groups.all()),
        )
    return groups


def collection_people(collection: Collection) -> dict[str, tuple[str, str, str]]:
    people = {}
    for field in ROLE_FIELDS:
        for person in getattr(collection, field).members.all():
            people[str(person)] = (person.first_name, person.last_name, person.language)
    return people


def move_policies(collection: Collection) -> tuple[list[tuple], list[tuple]]:
    """Return the collection's policies and those of its items, bundles and files.

    The collection's UUID in group names is replaced by a placeholder, so rows from two installations compare.
    """
    def portable(row: tuple) -> tuple:
        group = row[3]
        if group:
            group = group.replace(str(collection.uuid), "<collection>")
        return (*row[:3], group, *row[4:])

    items = set(collection.owned_items.filter(handle__isnull=False).values_list("handle__handle", flat=True))
    rows = [portable(row) for row in policy_rows()]
    own = [row for row in rows if row[0] == "collection" and row[1] == (str(collection.uuid),)]
    contained = [row for row in rows if row[0] in ("item", "bundle") and row[1][0] in items]
    contained += [
        row for row in rows
        if row[0] == "bitstream"
        and Bitstream.objects.filter(uuid=row[1][0], bundle__item__handle__handle__in=items).exists()
    ]
    return own, sorted(contained, key=repr)


@pytest.fixture
def collection_move(people_repository, tmp_path, bitstream_storage) -> CollectionMove:
    """Export Theses with its items (-a), wipe the repository and create a community to receive it."""
    theses = Collection.objects.get(name="Theses")
    own, contained = move_policies(theses)
    path = tmp_path / "move" / package_name("COLLECTION", theses.handle_string)
    move = CollectionMove(
        path=path,
        community="",
        handle=theses.handle_string,
        groups=collection_groups(theses),
        people=collection_people(theses),
        collection_policies=own,
        item_policies=contained,
        items=sorted(theses.owned_items.filter(handle__isnull=False).values_list("handle__handle", flat=True)),
    )
    packager("-d", "-a", "-i", theses.handle_string, str(path))
    wipe(bitstream_storage)
    move.community = Community.objects.create(handle=handle_mint("COMMUNITY"), name="Receiving").handle_string
    return move


def collection_restore(move: CollectionMove, *recursive: str) -> Collection:
    """Restore the moved collection under the receiving community, with its items when ``recursive`` is "-a".

    Without -a only the collection package is read, so the checks of its groups
    and of its own policies do not depend on what its items' policies name.
    """
    packager("-r", *recursive, "-o", "ignoreParent=true", "-p", move.community, str(move.path))
    return Collection.objects.get(handle__handle=move.handle)


def test_collection_move_recreates_member_people(collection_move):
    collection = collection_restore(collection_move)

    assert collection_people(collection) == collection_move.people


def test_collection_move_recreates_role_members(collection_move):
    collection = collection_restore(collection_move)

    members = {field: people for field, (people, _) in collection_groups(collection).items()}
    assert members == {field: people for field, (people, _) in collection_move.groups.items()}


def test_collection_move_group_names(collection_move):
    collection = collection_restore(collection_move)

    assert collection.admin_group.name == f"COLLECTION_{collection.uuid}_ADMIN"
    assert collection.submitters_group.name == f"COLLECTION_{collection.uuid}_SUBMIT"


def test_collection_move_recreates_member_groups(collection_move):
    collection = collection_restore(collection_move)

    assert collection_groups(collection)["admin_group"][1] == collection_move.groups["admin_group"][1]


def test_collection_move_collection_policies(collection_move):
    collection = collection_restore(collection_move)

    own, _ = move_policies(collection)
    assert own == collection_move.collection_policies


def test_collection_move_restores_items(collection_move):
    collection_restore(collection_move, "-a")

    assert sorted(archived_items().values_list("handle__handle", flat=True)) == collection_move.items


def test_collection_move_item_policies(collection_move):
    collection = collection_restore(collection_move, "-a")

    _, contained = move_policies(collection)
    assert contained == collection_move.item_policies


# --- submitter ----------------------------------------------------------------------------


VISITOR = "visiting.scholar@example.org"


@pytest.fixture
def lost_submitter(demo, tmp_path) -> Path:
    """Export an item submitted by a visitor, delete the item and the visitor, and return the package."""
    item = archived_items().filter(withdrawn=False, mapped_collections__isnull=True).first()
    item.submitter = EPerson.objects.create(email=VISITOR, first_name="Visiting", can_log_in=True)
    item.save()
    path = tmp_path / package_name("ITEM", item.handle_string)
    packager("-d", "-i", item.handle_string, str(path))
    item_delete(item)
    EPerson.objects.get(email=VISITOR).delete()
    return path


def restored_item(path: Path) -> Item:
    handle = mets_root(path).get("OBJID").removeprefix("hdl:")
    return Item.objects.get(handle__handle=handle)


def test_unknown_submitter_left_empty(lost_submitter):
    packager("-r", str(lost_submitter))

    assert restored_item(lost_submitter).submitter is None
    assert not EPerson.objects.filter(email=VISITOR).exists()


def test_unknown_submitter_warns(lost_submitter, capsys):
    packager("-r", str(lost_submitter))

    errors = capsys.readouterr().err
    assert "WARNING:" in errors
    assert f"submitter {VISITOR} is not in this repository" in errors


def test_unknown_submitter_created_when_enabled(lost_submitter, settings):
    settings.AIP_CREATE_SUBMITTER = True

    packager("-r", str(lost_submitter))

    submitter = restored_item(lost_submitter).submitter
    assert submitter is not None
    assert submitter.email == VISITOR


# --- unreadable files (unauthorized) ------------------------------------------------------


@dataclass
class MissingFile:
    item: Item
    bitstream: Bitstream
    folder: Path
    path: Path


@pytest.fixture
def missing_file(demo, tmp_path) -> MissingFile:
    """Delete the stored file of one CSV bitstream and return where its item's package would go."""
    item = archived_items().filter(withdrawn=False).first()
    bitstream = Bitstream.objects.get(bundle__item=item, name="data.csv")
    Path(bitstream.file.path).unlink()
    folder = tmp_path / "export"
    folder.mkdir()
    path = folder / package_name("ITEM", item.handle_string)
    return MissingFile(item=item, bitstream=bitstream, folder=folder, path=path)


def missing_file_export(missing: MissingFile, *options: str) -> None:
    packager("-d", *options, "-i", missing.item.handle_string, str(missing.path))


def file_element(path: Path, bitstream: Bitstream) -> etree._Element | None:
    found = mets_root(path).xpath("//mets:file[@ID=$id]", namespaces=NS, id=f"bitstream_{bitstream.uuid}")
    return found[0] if found else None


def premis_of(path: Path, bitstream: Bitstream) -> etree._Element:
    root = mets_root(path)
    admin_id = file_element(path, bitstream).get("ADMID")
    return root.xpath("//mets:amdSec[@ID=$id]//premis:object", namespaces=NS, id=admin_id)[0]


def entry_of(path: Path, bitstream: Bitstream) -> str | None:
    with zipfile.ZipFile(path) as archive:
        return next((name for name in archive.namelist() if str(bitstream.uuid) in name), None)


def test_unreadable_file_export_fails(missing_file):
    with pytest.raises(CommandError) as raised:
        missing_file_export(missing_file)

    message = str(raised.value)
    assert "data.csv" in message
    assert str(missing_file.bitstream.uuid) in message
    assert "-o unauthorized=skip" in message
    assert "-o unauthorized=zero" in message


def test_unreadable_file_export_leaves_nothing(missing_file):
    with pytest.raises(CommandError):
        missing_file_export(missing_file)

    assert list(missing_file.folder.iterdir()) == []


def test_unauthorized_skip_manifest(missing_file):
    missing_file_export(missing_file, "-o", "unauthorized=skip")

    assert file_element(missing_file.path, missing_file.bitstream) is None
    assert str(missing_file.bitstream.uuid) not in manifest_text(missing_file.path)


def test_unauthorized_skip_zip(missing_file):
    missing_file_export(missing_file, "-o", "unauthorized=skip")

    assert entry_of(missing_file.path, missing_file.bitstream) is None


def test_unauthorized_skip_keeps_other_files(missing_file):
    missing_file_export(missing_file, "-o", "unauthorized=skip")

    with zipfile.ZipFile(missing_file.path) as archive:
        names = archive.namelist()
    assert len(names) == 1 + Bitstream.objects.filter(bundle__item=missing_file.item).count() - 1


def test_unauthorized_zero_entry(missing_file):
    missing_file_export(missing_file, "-o", "unauthorized=zero")

    name = entry_of(missing_file.path, missing_file.bitstream)
    assert name is not None
    with zipfile.ZipFile(missing_file.path) as archive:
        assert archive.read(name) == b""


def test_unauthorized_zero_file_element(missing_file):
    missing_file_export(missing_file, "-o", "unauthorized=zero")

    element = file_element(missing_file.path, missing_file.bitstream)
    assert element.get("SIZE") == "0"
    assert element.get("CHECKSUM") == EMPTY_MD5
    assert element.get("CHECKSUMTYPE") == "MD5"


def test_unauthorized_zero_premis(missing_file):
    missing_file_export(missing_file, "-o", "unauthorized=zero")

    premis = premis_of(missing_file.path, missing_file.bitstream)
    assert premis.findtext(".//premis:size", namespaces=NS) == "0"
    assert premis.findtext(".//premis:messageDigest", namespaces=NS) == EMPTY_MD5
    assert premis.findtext(".//premis:messageDigestAlgorithm", namespaces=NS) == "MD5"


def test_unauthorized_invalid_value(missing_file):
    with pytest.raises(CommandError) as raised:
        missing_file_export(missing_file, "-o", "unauthorized=maybe")

    assert "unauthorized must be skip or zero, not 'maybe'" in str(raised.value)
    assert list(missing_file.folder.iterdir()) == []


# --- policies naming people or groups that do not exist -----------------------------------


@dataclass
class Attempt:
    path: Path
    snapshot: dict[str, int]
    files: list[str]


def item_package_orphan(item: Item, folder: Path) -> Attempt:
    """Export ``item``, delete it, and return its package with the state a failed restore must keep."""
    path = folder / package_name("ITEM", item.handle_string)
    packager("-d", "-i", item.handle_string, str(path))
    item_delete(item)
    return Attempt(path=path, snapshot={}, files=[])


def attempt_state(attempt: Attempt, bitstream_root: Path) -> Attempt:
    attempt.snapshot = database_snapshot()
    attempt.files = stored_files(bitstream_root)
    return attempt


@pytest.fixture
def missing_group(demo, tmp_path, bitstream_storage) -> Attempt:
    """The package of an item whose ADMIN policy names Library staff, in a repository without that group."""
    item = archived_items().filter(withdrawn=False, mapped_collections__isnull=True).first()
    assert item.policies.filter(group__name=STAFF).exists()
    attempt = item_package_orphan(item, tmp_path)
    Group.objects.get(name=STAFF).delete()
    return attempt_state(attempt, bitstream_storage)


@pytest.fixture
def missing_person(demo, tmp_path, bitstream_storage) -> Attempt:
    """The package of the item whose embargo names Björn, in a repository without Björn."""
    item = Item.objects.get(policies__eperson__email=BJORN)
    attempt = item_package_orphan(item, tmp_path)
    EPerson.objects.get(email=BJORN).delete()
    return attempt_state(attempt, bitstream_storage)


def test_policy_missing_group_message(missing_group):
    with pytest.raises(CommandError) as raised:
        packager("-r", str(missing_group.path))

    message = str(raised.value)
    assert f"a policy names the group '{STAFF}', which is not in this repository" in message
    assert missing_group.path.name in message


def test_policy_missing_group_writes_nothing(missing_group, bitstream_storage):
    with pytest.raises(CommandError):
        packager("-r", str(missing_group.path))

    assert database_snapshot() == missing_group.snapshot
    assert stored_files(bitstream_storage) == missing_group.files


def test_policy_unknown_person_message(missing_person):
    with pytest.raises(CommandError) as raised:
        packager("-r", str(missing_person.path))

    message = str(raised.value)
    assert f"a policy names the EPerson {BJORN}, who is not in this repository" in message
    assert missing_person.path.name in message


def test_policy_unknown_person_writes_nothing(missing_person, bitstream_storage):
    with pytest.raises(CommandError):
        packager("-r", str(missing_person.path))

    assert database_snapshot() == missing_person.snapshot
    assert stored_files(bitstream_storage) == missing_person.files


# --- DSpace documentation samples ---------------------------------------------------------


@pytest.fixture
def docs_dir(samples_dir) -> Path:
    return samples_dir / "dspace-docs-1.7"


@pytest.fixture
def sample_site(admin, docs_dir) -> None:
    packager("-r", "-f", "-u", str(docs_dir / "SITE-example.zip"))


@pytest.fixture
def sample_collection(sample_site, docs_dir) -> Collection:
    packager("-r", str(docs_dir / "COMMUNITY@123456789-1.zip"))
    packager("-r", str(docs_dir / "COLLECTION@123456789-2.zip"))
    return Collection.objects.get(handle__handle="123456789/2")


@pytest.mark.samples
def test_sample_site_people(sample_site):
    people = {
        person.email: (person.first_name, person.last_name, person.language, person.can_log_in)
        for person in EPerson.objects.exclude(email=ADMIN_EMAIL)
    }

    assert people == {
        "blah@blah.org": ("Blah", "Blah", "en", True),
        "curator@example.org": ("Alex", "Curator", "en", True),
    }


@pytest.mark.samples
def test_sample_site_administrators(sample_site):
    members = Group.objects.get(name=Group.ADMINISTRATOR).members.values_list("email", flat=True)

    assert sorted(members) == sorted(["blah@blah.org", "curator@example.org", ADMIN_EMAIL])


@pytest.mark.samples
def test_sample_site_anonymous(sample_site):
    anonymous = Group.objects.get(name=Group.ANONYMOUS)

    assert list(anonymous.members.all()) == []
    assert list(anonymous.member_groups.all()) == []


@pytest.mark.samples
def test_sample_collection_roles(sample_collection):
    prefix = f"COLLECTION_{sample_collection.uuid}_"

    assert sample_collection.admin_group.name == prefix + "ADMIN"
    assert sample_collection.submitters_group.name == prefix + "SUBMIT"
    assert sample_collection.workflow_step_1.name == prefix + "WORKFLOW_STEP_1"
    assert sample_collection.workflow_step_2.name == prefix + "WORKFLOW_STEP_2"
    assert sample_collection.workflow_step_3.name == prefix + "WORKFLOW_STEP_3"


@pytest.mark.samples
def test_sample_collection_groups(sample_collection):
    prefix = f"COLLECTION_{sample_collection.uuid}_"

    names = sorted(Group.objects.filter(name__startswith=prefix).values_list("name", flat=True))

    assert names == sorted(
        prefix + suffix
        for suffix in ("ADMIN", "SUBMIT", "WORKFLOW_STEP_1", "WORKFLOW_STEP_2", "WORKFLOW_STEP_3", "DEFAULT_READ")
    )


@pytest.mark.samples
def test_sample_collection_members(sample_collection):
    prefix = f"COLLECTION_{sample_collection.uuid}_"
    members = {
        group.name.removeprefix(prefix): sorted(person.email for person in group.members.all())
        for group in Group.objects.filter(name__startswith=prefix)
    }

    assert members == {
        "ADMIN": ["curator@example.org"],
        "SUBMIT": [],
        "WORKFLOW_STEP_1": [],
        "WORKFLOW_STEP_2": [],
        "WORKFLOW_STEP_3": [],
        "DEFAULT_READ": [],
    }


@pytest.mark.samples
def test_sample_collection_default_read_unattached(sample_collection):
    default_read = Group.objects.get(name=f"COLLECTION_{sample_collection.uuid}_DEFAULT_READ")
    roles = [getattr(sample_collection, field) for field in (
        "admin_group", "submitters_group", "workflow_step_1", "workflow_step_2", "workflow_step_3",
    )]

    assert default_read not in roles
