"""Create or update the administrator account of this installation."""
from __future__ import annotations

import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from repository.services import LinkedUserError, administrator_create


class Command(BaseCommand):
    help = (
        "Create or update an administrator: a Django superuser whose username is the email, "
        "an EPerson with that email that can log in, and its membership of the Administrator group. "
        "Running it again for the same email sets the new password and creates no second account. "
        "Without --password the password is read twice from the terminal; with no terminal "
        "the command fails instead of waiting."
    )
    # Tests pass a stand-in for standard input, as they do for Django's createsuperuser.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument(
            "--email",
            required=True,
            help="Email address of the administrator, also used as the Django username.",
        )
        parser.add_argument(
            "--password",
            help="Password to set. Omit it to type the password at a terminal prompt instead.",
        )
        parser.add_argument(
            "--first-name",
            default="",
            help="Given name stored on the user and the EPerson. Unchanged when omitted.",
        )
        parser.add_argument(
            "--last-name",
            default="",
            help="Family name stored on the user and the EPerson. Unchanged when omitted.",
        )

    def handle(self, *args, **options):
        email = self._clean_email(options["email"])
        password = options["password"]
        if password is None:
            password = self._prompt_password(options.get("stdin", sys.stdin))
        self._validate_password(password, email)

        try:
            eperson = administrator_create(
                email=email,
                password=password,
                first_name=options["first_name"],
                last_name=options["last_name"],
            )
        except LinkedUserError as error:
            raise CommandError(str(error)) from error

        if options["verbosity"] >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Administrator {email} is a superuser and EPerson {eperson.uuid} "
                    "is a member of the Administrator group."
                )
            )

    def _clean_email(self, email: str) -> str:
        email = email.strip()
        try:
            validate_email(email)
        except ValidationError as error:
            raise CommandError(f"Invalid --email value {email!r}: enter a valid email address.") from error

        max_length = get_user_model()._meta.get_field("username").max_length
        if max_length is not None and len(email) > max_length:
            raise CommandError(
                f"Invalid --email value {email!r}: it is used as the username, "
                f"which allows at most {max_length} characters."
            )
        return email

    def _prompt_password(self, stdin) -> str:
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            raise CommandError("Missing --password: give it on the command line, or run the command at a terminal.")

        password = getpass.getpass("Password: ")
        repeated = getpass.getpass("Password (again): ")
        if password != repeated:
            raise CommandError("The two passwords do not match. Run the command again.")
        return password

    def _validate_password(self, password: str, email: str) -> None:
        if not password:
            raise CommandError("Invalid --password: the password must not be empty.")

        # Applies AUTH_PASSWORD_VALIDATORS, as createsuperuser does. config/settings.py sets none at present.
        try:
            password_validation.validate_password(password, user=get_user_model()(username=email, email=email))
        except ValidationError as error:
            raise CommandError(f"Invalid --password: {' '.join(error.messages)}") from error
