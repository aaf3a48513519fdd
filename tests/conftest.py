"""Fixtures shared by the whole suite.

The suite runs on PostgreSQL (DATABASE_URL); bitstreams are written to a fresh
folder per test so that tests can check exactly which files a run left behind.
"""
import os
from pathlib import Path

import pytest
from django.core.files.storage import storages


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
def bitstream_storage(tmp_path, settings):
    """Point the bitstream storage at an empty folder for this test and return that folder."""
    root = tmp_path / "assetstore"
    root.mkdir()
    storage = storages["bitstreams"]
    previous = storage.location
    storage._location = str(root)
    storage.__dict__.pop("base_location", None)
    storage.__dict__.pop("location", None)
    yield root
    storage._location = previous
    storage.__dict__.pop("base_location", None)
    storage.__dict__.pop("location", None)
