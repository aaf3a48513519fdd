"""Fixtures for export and ingest tests: an administrator, a demo repository,
and helpers that run the packager command and snapshot what a run wrote."""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import django_rq
import pytest
import redis
from django.core.management import call_command
from rq import Queue, SimpleWorker

from aip.services.jobs import job_enqueue
from repository.demo import demo_repository_build
from repository.models import (
    Bitstream,
    Bundle,
    Collection,
    Community,
    EPerson,
    Group,
    Handle,
    Item,
    MetadataField,
    MetadataValue,
    ResourcePolicy,
)
from repository.services import administrator_create

ADMIN_EMAIL = "admin@example.org"
SNAPSHOT_MODELS = [
    Community,
    Collection,
    Item,
    Bundle,
    Bitstream,
    MetadataValue,
    MetadataField,
    ResourcePolicy,
    EPerson,
    Group,
    Handle,
]


@pytest.fixture(autouse=True)
def _isolated_bitstreams(bitstream_storage):
    """Every AIP test writes bitstreams into its own empty folder."""
    return bitstream_storage


@pytest.fixture
def admin(db) -> EPerson:
    return administrator_create(email=ADMIN_EMAIL, password="secret-password")


@pytest.fixture
def demo(admin):
    return demo_repository_build(seed=11)


def packager(*arguments: str) -> None:
    """Run ``manage.py packager`` as the test administrator."""
    call_command("packager", "-t", "AIP", "-e", ADMIN_EMAIL, *arguments)


def export_site(folder: Path) -> Path:
    path = folder / "SITE@123456789-0.zip"
    packager("-d", "-a", "-i", "123456789/0", str(path))
    return path


def database_snapshot() -> dict[str, int]:
    """Return the row count of every content table, to show that a failed run wrote nothing."""
    return {model.__name__: model.objects.count() for model in SNAPSHOT_MODELS}


def stored_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def package_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.zip"))}


def manifest_text(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read("mets.xml").decode("utf-8")


def repository_wipe(admin_email: str = ADMIN_EMAIL) -> None:
    """Bring the database back to a fresh installation with one administrator.

    Content, people and groups are deleted, and the two system groups are created
    anew (with new UUIDs), as after ``migrate`` and ``create_administrator``.
    """
    for item in Item.objects.all():
        item.mapped_collections.clear()
    Collection.objects.update(template_item=None, logo=None)
    Community.objects.update(logo=None)
    Bundle.objects.update(primary_bitstream=None)
    ResourcePolicy.objects.all().delete()
    MetadataValue.objects.all().delete()
    Bitstream.objects.all().delete()
    Bundle.objects.all().delete()
    Item.objects.all().delete()
    Collection.objects.all().delete()
    while Community.objects.exists():
        Community.objects.filter(subcommunities__isnull=True).delete()
    Handle.objects.exclude(suffix="0").delete()
    Group.objects.all().delete()
    EPerson.objects.all().delete()
    from django.contrib.auth import get_user_model

    get_user_model().objects.all().delete()
    Group.objects.create(name=Group.ANONYMOUS)
    Group.objects.create(name=Group.ADMINISTRATOR)
    administrator_create(email=admin_email, password="secret-password")


@dataclass
class Before:
    """Row counts and stored file names taken before a run that must write nothing."""

    database: dict[str, int]
    files: list[str]


def before(root: Path) -> Before:
    return Before(database=database_snapshot(), files=stored_files(root))


# Every EPerson field a restore must bring back.
PERSON_FIELDS = [
    "uuid",
    "email",
    "netid",
    "first_name",
    "last_name",
    "language",
    "can_log_in",
    "require_certificate",
    "self_registered",
    "password_hash",
    "password_digest_algorithm",
    "password_salt",
]


class BurstWorker(SimpleWorker):
    """An RQ worker without the command channel (stop and kill requests), which a burst run in a test never gets.

    rq 2.12 listens on that channel in a thread polling every 60 s, and stopping the thread
    at the end of a burst run sometimes waits for the whole poll.
    """

    def subscribe(self) -> None:
        self.pubsub_thread = None


@contextmanager
def rq_default_queue(settings, url: str) -> Iterator[Queue]:
    """Point REDIS_URL and the RQ "default" queue at ``url``, and yield that queue with its database emptied.

    The database is emptied again afterwards. Each test file that needs RQ passes a Redis
    database of its own, so that pytest-xdist processes do not share queues.
    """
    settings.REDIS_URL = url
    settings.RQ_QUEUES = {"default": {"URL": url, "DEFAULT_TIMEOUT": 3600, "ASYNC": True}}
    queue = django_rq.get_queue("default")
    try:
        queue.connection.flushdb()
    except redis.ConnectionError as error:
        pytest.fail(f"Redis at {url} is not reachable ({error}); start Redis on 127.0.0.1:6379.")
    try:
        yield queue
    finally:
        queue.connection.flushdb()


@pytest.fixture
def enqueue(django_capture_on_commit_callbacks):
    """Enqueue a job as after a commit: django-rq defers enqueues inside a transaction, and each test is one."""

    def enqueue(job):
        with django_capture_on_commit_callbacks(execute=True):
            return job_enqueue(job)

    return enqueue


def work(queue: Queue) -> None:
    """Run every job of ``queue`` in this process, then return."""
    BurstWorker([queue], connection=queue.connection).work(burst=True)
