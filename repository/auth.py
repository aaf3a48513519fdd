"""Log EPeople in with the password hash their (possibly restored) account carries."""
from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend

from repository.models import EPerson
from repository.passwords import UnsupportedDigestError, dspace_password_matches

logger = logging.getLogger(__name__)


class EPersonBackend(BaseBackend):
    """Authenticates an email and password against the EPerson's DSpace password hash.

    A matching EPerson that may log in gets a Django user (linked, created on first
    login, with no Django password of its own), so sessions and permissions work as
    for any Django user.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not username or password is None:
            return None
        person = EPerson.objects.filter(email__iexact=username, can_log_in=True).select_related("user").first()
        if person is None or not person.password_hash:
            return None
        try:
            matches = dspace_password_matches(
                password,
                stored_hash=person.password_hash,
                algorithm=person.password_digest_algorithm,
                salt_hex=person.password_salt,
            )
        except (UnsupportedDigestError, ValueError) as error:
            logger.error("password hash of EPerson %s cannot be checked: %s", person.uuid, error)
            return None
        if not matches:
            return None
        return self._linked_user(person)

    def _linked_user(self, person: EPerson):
        if person.user_id:
            return person.user if person.user.is_active else None
        user_model = get_user_model()
        user, _ = user_model._default_manager.get_or_create(username=person.email, defaults={"email": person.email})
        user.set_unusable_password()
        user.save()
        person.user = user
        person.save(update_fields=["user"])
        return user

    def get_user(self, user_id):
        return get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
