"""Tests of the collection approval workflow services and of their admin actions."""
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from repository.models import Collection, EPerson, Group, Handle, Item, ObjectType, WorkflowItem
from repository.workflow import (
    WorkflowError,
    item_install,
    workflow_approve,
    workflow_claim,
    workflow_reject,
    workflow_start,
    workflow_unclaim,
)

pytestmark = pytest.mark.django_db

CHANGELIST_URL = reverse("admin:repository_workflowitem_changelist")


def make_person(email: str, *groups: Group) -> EPerson:
    person = EPerson.objects.create(email=email, can_log_in=True)
    for group in groups:
        group.members.add(person)
    return person


def make_collection(name: str, **step_groups: Group) -> Collection:
    """Create a collection; ``step_groups`` maps ``workflow_step_<n>`` to its group."""
    return Collection.objects.create(name=name, **step_groups)


def make_item(name: str, submitter: EPerson | None = None, handle_suffix: int | None = None) -> Item:
    handle = None
    if handle_suffix is not None:
        handle = Handle.objects.create(
            handle=f"123456789/{handle_suffix}",
            prefix="123456789",
            suffix=str(handle_suffix),
            suffix_number=handle_suffix,
            resource_type=ObjectType.ITEM,
        )
    return Item.objects.create(name=name, submitter=submitter, handle=handle, last_modified=timezone.now())


@pytest.fixture
def reviewers(db) -> Group:
    return Group.objects.create(name="Thesis reviewers")


@pytest.fixture
def editors(db) -> Group:
    """The step 3 group, whose members are in it through the member group "Metadata staff"."""
    editors = Group.objects.create(name="Thesis editors")
    staff = Group.objects.create(name="Metadata staff")
    editors.member_groups.add(staff)
    return editors


@pytest.fixture
def submitter(db) -> EPerson:
    return make_person("student@example.org")


@pytest.fixture
def reviewer(reviewers) -> EPerson:
    return make_person("reviewer@example.org", reviewers)


@pytest.fixture
def editor(editors) -> EPerson:
    return make_person("editor@example.org", Group.objects.get(name="Metadata staff"))


@pytest.fixture
def outsider(db) -> EPerson:
    return make_person("outsider@example.org")


@pytest.fixture
def administrator(db) -> EPerson:
    return make_person("admin@example.org", Group.objects.get(name=Group.ADMINISTRATOR))


@pytest.fixture
def theses(reviewers, editors) -> Collection:
    """A collection with groups for steps 1 and 3 and none for step 2."""
    return make_collection("Physics theses", workflow_step_1=reviewers, workflow_step_3=editors)


@pytest.fixture
def waiting(theses, submitter) -> WorkflowItem:
    item = make_item("Thermal noise in resistors", submitter, handle_suffix=40)
    return workflow_start(item=item, collection=theses)


def refreshed(obj):
    obj.refresh_from_db()
    return obj


# Starting a workflow


def test_start_without_steps_installs_item(submitter):
    collection = make_collection("Open deposits")
    item = make_item("Preprint", submitter)

    result = workflow_start(item=item, collection=collection)

    assert result is None
    item.refresh_from_db()
    assert item.in_archive is True
    assert item.withdrawn is False
    assert item.owning_collection == collection
    assert not WorkflowItem.objects.filter(item=item).exists()


def test_start_waits_in_first_step(waiting, theses, submitter):
    assert waiting.step == WorkflowItem.Step.REVIEW
    assert waiting.state == WorkflowItem.State.WAITING
    assert waiting.collection == theses
    assert waiting.submitter == submitter
    assert waiting.owner is None
    item = refreshed(waiting.item)
    assert item.in_archive is False
    assert item.owning_collection == theses


def test_start_skips_steps_without_group(reviewers, submitter):
    collection = make_collection("Checked only", workflow_step_2=reviewers)

    workflow_item = workflow_start(item=make_item("Report", submitter), collection=collection)

    assert workflow_item.step == WorkflowItem.Step.CHECK


def test_start_archived_item_fails(theses):
    item = make_item("Already archived")
    item.in_archive = True
    item.save()

    with pytest.raises(WorkflowError, match="already in the archive"):
        workflow_start(item=item, collection=theses)

    assert not WorkflowItem.objects.filter(item=item).exists()


def test_start_waiting_item_fails(waiting, theses):
    with pytest.raises(WorkflowError, match=r"already waiting in step 1 \(review\)"):
        workflow_start(item=waiting.item, collection=theses)


def test_start_after_rejection_replaces_entry(waiting, theses, reviewer):
    workflow_reject(workflow_item=waiting, person=reviewer, reason="Abstract missing.", claim=True)

    again = workflow_start(item=refreshed(waiting.item), collection=theses)

    assert again.pk != waiting.pk
    assert again.state == WorkflowItem.State.WAITING
    assert again.step == WorkflowItem.Step.REVIEW
    assert again.reason == ""
    assert WorkflowItem.objects.filter(item=waiting.item).count() == 1


# Claiming, approving and rejecting


def test_approve_moves_to_next_step_with_group(waiting, reviewer):
    workflow_claim(workflow_item=waiting, person=reviewer)

    result = workflow_approve(workflow_item=waiting, person=reviewer)

    assert result.step == WorkflowItem.Step.FINAL_EDIT
    assert result.state == WorkflowItem.State.WAITING
    assert result.owner is None
    assert refreshed(waiting.item).in_archive is False


def test_approve_last_step_installs_item(waiting, reviewer, editor):
    workflow_claim(workflow_item=waiting, person=reviewer)
    workflow_approve(workflow_item=waiting, person=reviewer)
    workflow_claim(workflow_item=waiting, person=editor)
    before = refreshed(waiting.item).last_modified

    result = workflow_approve(workflow_item=waiting, person=editor)

    assert result.state == WorkflowItem.State.INSTALLED
    assert result.step == WorkflowItem.Step.FINAL_EDIT
    assert result.owner == editor
    item = refreshed(waiting.item)
    assert item.in_archive is True
    assert item.withdrawn is False
    assert item.last_modified > before


def test_reject_keeps_item_out_of_archive(waiting, reviewer):
    workflow_claim(workflow_item=waiting, person=reviewer)

    result = workflow_reject(workflow_item=waiting, person=reviewer, reason="  The PDF is not the thesis.\n")

    stored = refreshed(result)
    assert stored.state == WorkflowItem.State.REJECTED
    assert stored.reason == "The PDF is not the thesis."
    assert stored.owner == reviewer
    assert stored.step == WorkflowItem.Step.REVIEW
    assert refreshed(waiting.item).in_archive is False


def test_reject_without_reason_fails(waiting, reviewer):
    workflow_claim(workflow_item=waiting, person=reviewer)

    with pytest.raises(WorkflowError, match="the reason is missing"):
        workflow_reject(workflow_item=waiting, person=reviewer, reason="   ")

    assert refreshed(waiting).state == WorkflowItem.State.WAITING


def test_rejection_without_reason_violates_constraint(waiting):
    waiting.state = WorkflowItem.State.REJECTED

    with pytest.raises(IntegrityError):
        waiting.save()


@pytest.mark.parametrize("action", ["claim", "approve", "reject"])
def test_non_member_cannot_act(waiting, outsider, action):
    services = {
        "claim": lambda: workflow_claim(workflow_item=waiting, person=outsider),
        "approve": lambda: workflow_approve(workflow_item=waiting, person=outsider, claim=True),
        "reject": lambda: workflow_reject(workflow_item=waiting, person=outsider, reason="No.", claim=True),
    }

    with pytest.raises(WorkflowError) as failure:
        services[action]()

    message = str(failure.value)
    assert message.startswith(f"outsider@example.org may not {action} ")
    assert 'item "Thermal noise in resistors" (123456789/40)' in message
    assert "step 1 (review) of collection Physics theses" in message
    assert "Thesis reviewers" in message
    stored = refreshed(waiting)
    assert stored.state == WorkflowItem.State.WAITING
    assert stored.owner is None


def test_member_of_other_step_cannot_claim(waiting, editor):
    with pytest.raises(WorkflowError, match="may not claim"):
        workflow_claim(workflow_item=waiting, person=editor)


def test_member_through_member_group_may_claim(waiting, reviewer, editor):
    workflow_approve(workflow_item=waiting, person=reviewer, claim=True)

    result = workflow_claim(workflow_item=waiting, person=editor)

    assert result.owner == editor


def test_administrator_may_claim_and_approve(waiting, administrator):
    workflow_claim(workflow_item=waiting, person=administrator)
    workflow_approve(workflow_item=waiting, person=administrator)
    workflow_claim(workflow_item=waiting, person=administrator)

    result = workflow_approve(workflow_item=waiting, person=administrator)

    assert result.state == WorkflowItem.State.INSTALLED
    assert refreshed(waiting.item).in_archive is True


def test_administrator_may_reject(waiting, administrator):
    result = workflow_reject(workflow_item=waiting, person=administrator, reason="Duplicate.", claim=True)

    assert result.state == WorkflowItem.State.REJECTED


def test_superuser_without_eperson_may_approve(waiting):
    result = workflow_approve(workflow_item=waiting, person=None, superuser=True)

    assert result.step == WorkflowItem.Step.FINAL_EDIT


def test_missing_person_without_superuser_fails(waiting):
    with pytest.raises(WorkflowError, match="A user without an EPerson may not approve"):
        workflow_approve(workflow_item=waiting, person=None)


def test_approve_unclaimed_step_fails(waiting, reviewer):
    with pytest.raises(WorkflowError, match="nobody has claimed it"):
        workflow_approve(workflow_item=waiting, person=reviewer)

    assert refreshed(waiting).step == WorkflowItem.Step.REVIEW


def test_approve_step_claimed_by_other_fails(waiting, reviewers, reviewer):
    colleague = make_person("colleague@example.org", reviewers)
    workflow_claim(workflow_item=waiting, person=colleague)

    with pytest.raises(WorkflowError, match="colleague@example.org has claimed it"):
        workflow_approve(workflow_item=waiting, person=reviewer, claim=True)

    assert refreshed(waiting).step == WorkflowItem.Step.REVIEW


def test_claim_step_claimed_by_other_fails(waiting, reviewers, reviewer):
    colleague = make_person("colleague@example.org", reviewers)
    workflow_claim(workflow_item=waiting, person=colleague)

    with pytest.raises(WorkflowError, match="colleague@example.org has claimed it"):
        workflow_claim(workflow_item=waiting, person=reviewer)

    assert refreshed(waiting).owner == colleague


def test_claim_twice_keeps_owner(waiting, reviewer):
    workflow_claim(workflow_item=waiting, person=reviewer)

    result = workflow_claim(workflow_item=waiting, person=reviewer)

    assert result.owner == reviewer


def test_claim_finished_workflow_fails(waiting, reviewer):
    workflow_reject(workflow_item=waiting, person=reviewer, reason="Out of scope.", claim=True)

    with pytest.raises(WorkflowError, match="its workflow has ended, it was rejected"):
        workflow_claim(workflow_item=waiting, person=reviewer)


def test_unclaim_by_owner_returns_step(waiting, reviewer):
    workflow_claim(workflow_item=waiting, person=reviewer)

    result = workflow_unclaim(workflow_item=waiting, person=reviewer)

    assert result.owner is None
    assert refreshed(waiting).owner is None


def test_unclaim_by_other_member_fails(waiting, reviewers, reviewer):
    colleague = make_person("colleague@example.org", reviewers)
    workflow_claim(workflow_item=waiting, person=reviewer)

    with pytest.raises(WorkflowError, match="only its owner reviewer@example.org"):
        workflow_unclaim(workflow_item=waiting, person=colleague)

    assert refreshed(waiting).owner == reviewer


def test_unclaim_by_administrator_frees_step(waiting, reviewer, administrator):
    workflow_claim(workflow_item=waiting, person=reviewer)

    workflow_unclaim(workflow_item=waiting, person=administrator)

    assert refreshed(waiting).owner is None


def test_deleted_step_group_leaves_administrators(waiting, reviewers, reviewer, administrator):
    workflow_claim(workflow_item=waiting, person=reviewer)
    reviewers.delete()

    with pytest.raises(WorkflowError, match="the step has no group any more"):
        workflow_approve(workflow_item=waiting, person=reviewer)
    workflow_unclaim(workflow_item=waiting, person=administrator)
    result = workflow_approve(workflow_item=waiting, person=administrator, claim=True)

    assert result.step == WorkflowItem.Step.FINAL_EDIT


def test_install_clears_withdrawn():
    item = make_item("Withdrawn thesis")
    item.withdrawn = True
    item.save()

    item_install(item=item)

    stored = refreshed(item)
    assert stored.in_archive is True
    assert stored.withdrawn is False


# Admin


def login_as(client, person: EPerson | None, *, superuser: bool = False):
    """Log ``client`` in as a staff user linked to ``person``, with the permissions the workflow actions need."""
    user = get_user_model().objects.create_user(
        username=f"user-{person.email if person else 'plain'}", password="unused", is_staff=True, is_superuser=superuser
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="repository", codename__in=["view_workflowitem", "change_workflowitem"]
        )
    )
    if person is not None:
        person.user = user
        person.save()
    client.force_login(user)
    return client


def run_action(client, action: str, *workflow_items: WorkflowItem, **fields):
    """Post ``action`` for ``workflow_items`` from the changelist and follow the redirect back to it."""
    return client.post(
        CHANGELIST_URL,
        {"action": action, "_selected_action": [row.pk for row in workflow_items], **fields},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_admin_changelist_lists_waiting_items(admin_client, waiting, reviewer, submitter, theses):
    installed = workflow_start(item=make_item("Second thesis", submitter), collection=theses)
    workflow_approve(workflow_item=installed, person=reviewer, claim=True)
    workflow_approve(workflow_item=installed, person=None, superuser=True)

    response = admin_client.get(CHANGELIST_URL, {"state__exact": "waiting"})

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [waiting.pk]
    assert "Thermal noise in resistors" in response.content.decode()


@pytest.mark.parametrize(
    ("filters", "found"),
    [
        ({"step__exact": "1"}, True),
        ({"step__exact": "3"}, False),
        ({"q": "thermal noise"}, True),
        ({"q": "123456789/40"}, True),
        ({"q": "no-such-item-zz"}, False),
    ],
)
def test_admin_changelist_filters_and_search(admin_client, waiting, filters, found):
    response = admin_client.get(CHANGELIST_URL, filters)

    assert response.status_code == 200
    assert (waiting.pk in {row.pk for row in response.context["cl"].result_list}) is found


def test_admin_changelist_filters_by_collection(admin_client, waiting, theses, submitter, reviewers):
    other = make_collection("Maths theses", workflow_step_2=reviewers)
    workflow_start(item=make_item("Prime gaps", submitter), collection=other)

    response = admin_client.get(CHANGELIST_URL, {"collection__id__exact": str(theses.pk)})

    assert [row.pk for row in response.context["cl"].result_list] == [waiting.pk]


def test_admin_changelist_queries_independent_of_rows(admin_client, waiting, theses, submitter):
    admin_client.get(CHANGELIST_URL)
    with CaptureQueriesContext(connection) as few_rows:
        admin_client.get(CHANGELIST_URL)

    for number in range(5):
        workflow_start(item=make_item(f"Thesis {number}", submitter, handle_suffix=100 + number), collection=theses)
    with CaptureQueriesContext(connection) as more_rows:
        response = admin_client.get(CHANGELIST_URL)

    assert response.context["cl"].result_count == 6
    assert len(more_rows) == len(few_rows), [query["sql"] for query in more_rows.captured_queries]


def test_admin_change_page_is_read_only(admin_client, waiting):
    response = admin_client.get(reverse("admin:repository_workflowitem_change", args=[waiting.pk]))

    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()


def test_admin_add_page_forbidden(admin_client):
    response = admin_client.get(reverse("admin:repository_workflowitem_add"))

    assert response.status_code == 403


def test_admin_approve_action_installs(admin_client, reviewers, submitter):
    collection = make_collection("Reviewed only", workflow_step_1=reviewers)
    workflow_item = workflow_start(item=make_item("Lecture notes", submitter), collection=collection)

    response = run_action(admin_client, "approve", workflow_item)

    assert response.redirect_chain == [(CHANGELIST_URL, 302)]
    assert messages_of(response) == ["Approved 1 workflow item: 1 installed, 0 moved to their next step."]
    assert refreshed(workflow_item).state == WorkflowItem.State.INSTALLED
    assert refreshed(workflow_item.item).in_archive is True


def test_admin_approve_action_as_member(client, waiting, reviewer):
    login_as(client, reviewer)

    response = run_action(client, "approve", waiting)

    assert messages_of(response) == ["Approved 1 workflow item: 0 installed, 1 moved to their next step."]
    assert refreshed(waiting).step == WorkflowItem.Step.FINAL_EDIT


def test_admin_approve_action_as_non_member(client, waiting, outsider):
    login_as(client, outsider)

    response = run_action(client, "approve", waiting)

    assert response.redirect_chain == [(CHANGELIST_URL, 302)]
    [message] = messages_of(response)
    assert message.startswith("outsider@example.org may not approve item \"Thermal noise in resistors\"")
    assert "step 1 (review)" in message
    assert refreshed(waiting).step == WorkflowItem.Step.REVIEW


def test_admin_superuser_with_eperson_acts_as_it(client, waiting, outsider):
    login_as(client, outsider, superuser=True)

    response = run_action(client, "approve", waiting)

    [message] = messages_of(response)
    assert message.startswith("outsider@example.org may not approve")
    assert refreshed(waiting).step == WorkflowItem.Step.REVIEW


def test_admin_user_without_eperson_cannot_act(client, waiting):
    login_as(client, None)

    response = run_action(client, "approve", waiting)

    [message] = messages_of(response)
    assert "is not linked to an EPerson" in message
    assert refreshed(waiting).step == WorkflowItem.Step.REVIEW


def test_admin_reject_action_asks_for_reason(admin_client, waiting):
    response = run_action(admin_client, "reject", waiting)

    assert response.redirect_chain == []
    assert "admin/repository/workflowitem/reject.html" in [template.name for template in response.templates]
    content = response.content.decode()
    assert 'name="reason"' in content
    assert f'name="_selected_action" value="{waiting.pk}"' in content
    assert refreshed(waiting).state == WorkflowItem.State.WAITING


def test_admin_reject_action_with_reason(admin_client, waiting):
    response = run_action(admin_client, "reject", waiting, apply="yes", reason="Signature page missing.")

    assert response.redirect_chain == [(CHANGELIST_URL, 302)]
    assert messages_of(response) == ["Rejected 1 workflow item."]
    stored = refreshed(waiting)
    assert stored.state == WorkflowItem.State.REJECTED
    assert stored.reason == "Signature page missing."
    assert refreshed(waiting.item).in_archive is False


def test_admin_reject_action_blank_reason_asks_again(admin_client, waiting):
    response = run_action(admin_client, "reject", waiting, apply="yes", reason=" ")

    assert response.redirect_chain == []
    assert response.context["form"].errors["reason"] == ["This field is required."]
    assert refreshed(waiting).state == WorkflowItem.State.WAITING


def test_admin_claim_and_unclaim_actions(client, waiting, reviewer):
    login_as(client, reviewer)

    claim_messages = messages_of(run_action(client, "claim", waiting))
    owner_after_claim = refreshed(waiting).owner
    unclaim_messages = messages_of(run_action(client, "unclaim", waiting))

    assert claim_messages == ["Claimed 1 workflow item."]
    assert owner_after_claim == reviewer
    assert unclaim_messages == ["Returned 1 workflow item to the pool."]
    assert refreshed(waiting).owner is None
