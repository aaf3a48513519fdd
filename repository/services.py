"""Services that write to the content model outside AIP ingest."""
from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.db import transaction

from .models import EPerson, Group

logger = logging.getLogger(__name__)


class LinkedUserError(Exception):
    """The Django user is already linked to an EPerson with another email."""


@transaction.atomic
def administrator_create(*, email: str, password: str, first_name: str = "", last_name: str = "") -> EPerson:
    """Create or update a Django superuser and an EPerson in the Administrator group for ``email``.

    The superuser's username is ``email``. A second call with the same email sets the
    new password and keeps one user, one EPerson and one group membership. Empty names
    leave the stored names unchanged.

    Raises ``LinkedUserError`` when the user is already linked to an EPerson with
    another email, because the link is one-to-one. Nothing is saved then.
    """
    user_model = get_user_model()
    user, user_created = user_model._default_manager.get_or_create(username=email)
    user.email = email
    user.is_active = True
    user.is_staff = True
    user.is_superuser = True
    if first_name:
        user.first_name = first_name
    if last_name:
        user.last_name = last_name
    user.set_password(password)
    user.save()

    eperson, eperson_created = EPerson.objects.get_or_create(email=email)
    linked = EPerson.objects.filter(user=user).exclude(pk=eperson.pk).first()
    if linked is not None:
        raise LinkedUserError(
            f"User {email!r} is already linked to EPerson {linked}. "
            "Unlink it in the admin or use that EPerson's email."
        )
    eperson.user = user
    eperson.can_log_in = True
    if first_name:
        eperson.first_name = first_name
    if last_name:
        eperson.last_name = last_name
    eperson.save()

    # The group is seeded by a data migration, but a database restored from elsewhere may lack it.
    administrators, _ = Group.objects.get_or_create(name=Group.ADMINISTRATOR)
    administrators.members.add(eperson)

    logger.info(
        "administrator %s saved: Django user %s, EPerson %s %s",
        email,
        "created" if user_created else "updated",
        eperson.uuid,
        "created" if eperson_created else "updated",
    )
    return eperson
