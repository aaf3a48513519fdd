"""Tests of the create_administrator command and the service behind it."""
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from repository.models import EPerson, Group


class FakeTerminal(io.StringIO):
    """Standard input that reports being a terminal, so the command prompts for the password."""

    def isatty(self) -> bool:
        return True


def run_command(*args, stdin=None, **options) -> str:
    stdout = io.StringIO()
    call_command("create_administrator", *args, stdin=stdin or io.StringIO(), stdout=stdout, **options)
    return stdout.getvalue()


@pytest.mark.django_db
def test_create_administrator_new_account():
    output = run_command(
        "--email", "admin@example.org", "--password", "first-secret", "--first-name", "Ada", "--last-name", "Lovelace"
    )

    user = get_user_model().objects.get(username="admin@example.org")
    assert user.is_superuser
    assert user.is_staff
    assert user.is_active
    assert user.email == "admin@example.org"
    assert user.check_password("first-secret")

    eperson = EPerson.objects.get(email="admin@example.org")
    assert eperson.user == user
    assert eperson.can_log_in
    assert eperson.first_name == "Ada"
    assert eperson.last_name == "Lovelace"

    administrators = Group.objects.get(name=Group.ADMINISTRATOR)
    assert administrators.members.filter(pk=eperson.pk).exists()
    assert "admin@example.org" in output
    assert "first-secret" not in output


@pytest.mark.django_db
def test_create_administrator_rerun_updates_password():
    run_command("--email", "admin@example.org", "--password", "first-secret", "--first-name", "Ada")
    run_command("--email", "admin@example.org", "--password", "second-secret")

    users = get_user_model().objects.filter(username="admin@example.org")
    assert users.count() == 1
    assert users.get().check_password("second-secret")
    assert not users.get().check_password("first-secret")
    assert EPerson.objects.filter(email="admin@example.org").count() == 1
    assert Group.objects.filter(name=Group.ADMINISTRATOR).count() == 1
    assert Group.objects.get(name=Group.ADMINISTRATOR).members.count() == 1
    # A run without --first-name keeps the name stored by the first run.
    assert EPerson.objects.get(email="admin@example.org").first_name == "Ada"


@pytest.mark.django_db
def test_create_administrator_links_existing_eperson():
    restored = EPerson.objects.create(email="admin@example.org", can_log_in=False, last_name="Hopper")

    run_command("--email", "admin@example.org", "--password", "secret")

    restored.refresh_from_db()
    assert restored.can_log_in
    assert restored.user.username == "admin@example.org"
    assert restored.last_name == "Hopper"
    assert EPerson.objects.count() == 1


@pytest.mark.django_db
def test_create_administrator_creates_missing_group():
    Group.objects.filter(name=Group.ADMINISTRATOR).delete()

    run_command("--email", "admin@example.org", "--password", "secret")

    administrators = Group.objects.get(name=Group.ADMINISTRATOR)
    assert list(administrators.members.values_list("email", flat=True)) == ["admin@example.org"]


@pytest.mark.django_db
@pytest.mark.parametrize("email", ["not-an-email", "admin@", "@example.org", "a b@example.org"])
def test_create_administrator_invalid_email(email):
    with pytest.raises(CommandError) as raised:
        run_command("--email", email, "--password", "secret")

    assert repr(email) in str(raised.value)
    assert not get_user_model().objects.exists()
    assert not EPerson.objects.exists()


@pytest.mark.django_db
def test_create_administrator_email_too_long():
    email = "a" * 150 + "@example.org"

    with pytest.raises(CommandError) as raised:
        run_command("--email", email, "--password", "secret")

    assert "150" in str(raised.value)
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_create_administrator_no_password_no_terminal():
    with pytest.raises(CommandError) as raised:
        run_command("--email", "admin@example.org", stdin=io.StringIO())

    assert "--password" in str(raised.value)
    assert not get_user_model().objects.exists()
    assert not EPerson.objects.exists()


@pytest.mark.django_db
def test_create_administrator_missing_email():
    with pytest.raises(CommandError) as raised:
        run_command("--password", "secret")

    assert "--email" in str(raised.value)


@pytest.mark.django_db
def test_create_administrator_empty_password():
    with pytest.raises(CommandError) as raised:
        run_command("--email", "admin@example.org", "--password", "")

    assert "--password" in str(raised.value)
    assert not get_user_model().objects.exists()


# getpass reads from the controlling terminal, which a test run does not have, so it is replaced.
@pytest.mark.django_db
def test_create_administrator_prompts_twice(monkeypatch):
    prompts = []

    def fake_getpass(prompt):
        prompts.append(prompt)
        return "typed-secret"

    monkeypatch.setattr("getpass.getpass", fake_getpass)

    run_command("--email", "admin@example.org", stdin=FakeTerminal())

    assert len(prompts) == 2
    assert get_user_model().objects.get(username="admin@example.org").check_password("typed-secret")


@pytest.mark.django_db
def test_create_administrator_mismatched_prompts(monkeypatch):
    answers = iter(["typed-secret", "typo-secret"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))

    with pytest.raises(CommandError) as raised:
        run_command("--email", "admin@example.org", stdin=FakeTerminal())

    assert "do not match" in str(raised.value)
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_create_administrator_user_linked_elsewhere():
    run_command("--email", "admin@example.org", "--password", "secret")
    EPerson.objects.filter(email="admin@example.org").update(email="renamed@example.org")

    with pytest.raises(CommandError) as raised:
        run_command("--email", "admin@example.org", "--password", "secret")

    assert "renamed@example.org" in str(raised.value)
    # The transaction rolled back, so no EPerson was created for the email.
    assert not EPerson.objects.filter(email="admin@example.org").exists()
