"""Submitted items and the collection approval workflow; restores never use it."""
from pathlib import Path

import pytest

from repository.models import Collection, Group, Item, WorkflowItem
from repository.workflow import workflow_approve
from tests.aip.conftest import ADMIN_EMAIL, packager


@pytest.fixture
def item_package(demo, tmp_path) -> tuple[Path, Collection]:
    """Export one demo item and return its package and a collection whose step 1 has a group."""
    item = Item.objects.filter(in_archive=True, withdrawn=False).order_by("handle__suffix_number").first()
    path = tmp_path / "item.zip"
    packager("-d", "-i", item.handle.handle, str(path))
    collection = Collection.objects.exclude(pk=item.owning_collection_id).order_by("name").first()
    collection.workflow_step_1 = Group.objects.get(name="Reviewers")
    collection.save()
    return path, collection


def _newest_item() -> Item:
    return Item.objects.order_by("-id").first()


@pytest.mark.django_db
def test_submit_waits_in_workflow(item_package, capsys):
    path, collection = item_package

    packager("-s", "-p", collection.handle.handle, str(path))

    item = _newest_item()
    workflow_item = WorkflowItem.objects.get(item=item)
    assert workflow_item.step == 1
    assert workflow_item.state == WorkflowItem.State.WAITING
    assert item.in_archive is False
    assert "waits in the approval workflow" in capsys.readouterr().err


@pytest.mark.django_db
def test_submit_approved_item_installed(item_package, admin):
    path, collection = item_package
    packager("-s", "-p", collection.handle.handle, str(path))
    item = _newest_item()

    workflow_approve(workflow_item=WorkflowItem.objects.get(item=item), person=admin, claim=True)

    item.refresh_from_db()
    assert item.in_archive is True
    assert item.metadata.filter(field__qualifier="provenance", value__startswith="Made available in DSpace").count() == 1


@pytest.mark.django_db
def test_submit_no_workflow_flag_installs(item_package):
    path, collection = item_package

    packager("-s", "-w", "-p", collection.handle.handle, str(path))

    item = _newest_item()
    assert item.in_archive is True
    assert not WorkflowItem.objects.filter(item=item).exists()


@pytest.mark.django_db
def test_restore_ignores_workflow(item_package):
    path, collection = item_package
    item = Item.objects.get(handle__handle=_package_handle(path))
    owner = item.owning_collection
    owner.workflow_step_1 = Group.objects.get(name="Reviewers")
    owner.save()
    item.delete()

    packager("-r", str(path))

    restored = Item.objects.get(handle__handle=_package_handle(path))
    assert restored.in_archive is True
    assert not WorkflowItem.objects.filter(item=restored).exists()


def _package_handle(path: Path) -> str:
    from tests.aip.conftest import manifest_text

    text = manifest_text(path)
    start = text.index('OBJID="hdl:') + len('OBJID="hdl:')
    return text[start : text.index('"', start)]
