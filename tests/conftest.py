"""Fixtures shared by the whole suite.

The suite runs on PostgreSQL (DATABASE_URL); bitstreams are written to a fresh
folder per test so that tests can check exactly which files a run left behind.
"""
import importlib
import os
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.core.files.storage import FileSystemStorage, storages

from repository.models import Bitstream, Group, MetadataSchema

seed_registry = importlib.import_module("repository.migrations.0002_registry").seed_registry


def _dir_from_env(name: str) -> Path | None:
    """Return the folder named by environment variable ``name``; fail if it is set but missing."""
    value = os.environ.get(name)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{name} is set to {value!r}, which is not a folder. Point it at the folder or unset it.")
    return path


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """Folder of real AIPs written by DSpace; tests using it skip when AIP_SAMPLES_DIR is unset."""
    path = _dir_from_env("AIP_SAMPLES_DIR")
    if path is None:
        pytest.skip("AIP_SAMPLES_DIR is not set: set it to the folder of DSpace sample AIPs to run this test.")
    return path


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    """Folder of local XML schemas; tests using it skip when AIP_SCHEMA_DIR is unset."""
    path = _dir_from_env("AIP_SCHEMA_DIR")
    if path is None:
        pytest.skip("AIP_SCHEMA_DIR is not set: set it to the folder of METS, PREMIS and METSRights schemas.")
    return path


@pytest.fixture
def bitstream_storage(tmp_path):
    """Point the bitstream storage at an empty folder for this test and return that folder.

    Both the storage handler's entry and the storage of ``Bitstream.file`` are replaced:
    a test that overrides STORAGES makes the handler build new instances, while the
    model field keeps the one it got at import.
    """
    root = tmp_path / "assetstore"
    root.mkdir()
    field = Bitstream._meta.get_field("file")
    previous_field_storage = field.storage
    storage = FileSystemStorage(location=str(root))
    storages._storages["bitstreams"] = storage
    field.storage = storage
    yield root
    field.storage = previous_field_storage
    storages._storages.pop("bitstreams", None)


@pytest.fixture(autouse=True)
def _registry_after_flush(request):
    """Seed the registries and system groups again when a test that commits has emptied them.

    A test that commits ends by emptying every table, which also removes the rows a
    data migration created. Such tests run last in one process, but with pytest-xdist a
    process may run other test files after them, so every database test checks.
    """
    marker = request.node.get_closest_marker("django_db")
    commits = bool(marker and marker.kwargs.get("transaction")) or any(
        name in request.fixturenames for name in ("transactional_db", "live_server")
    )
    if commits:
        request.getfixturevalue("transactional_db")
    elif marker is not None or "db" in request.fixturenames:
        request.getfixturevalue("db")
    else:
        return
    if not (Group.objects.filter(name=Group.ADMINISTRATOR).exists() and MetadataSchema.objects.exists()):
        seed_registry(django_apps, None)
