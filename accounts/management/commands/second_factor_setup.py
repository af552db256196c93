"""Set up a user's authenticator from the server's command line: `manage.py second_factor_setup`.

Staff log in with a second factor everywhere (API, portal, admin), so the first
administrator, made with `createsuperuser`, needs one before the API or the admin lets
them in; the portal's Security page does the same for every other user.

    manage.py second_factor_setup admin                 # prints the otpauth:// URI to add to an app
    manage.py second_factor_setup admin --code 123456   # confirms it; prints the recovery codes once
"""

import pyotp
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import second_factor_begin, second_factor_confirm
from core.errors import DomainError


class Command(BaseCommand):
    help = "Set up a user's authenticator (TOTP): print its URI, then confirm it with a first code."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--code", help="the authenticator's current code, to confirm the set-up")

    def handle(self, *args, username, code, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        try:
            if code is None:
                factor = second_factor_begin(user=user)
                uri = pyotp.TOTP(factor.secret).provisioning_uri(name=username, issuer_name="Vantage")
                self.stdout.write(uri)
                self.stderr.write("Add this URI to an authenticator app (most read it as a QR code or as the "
                                  f"secret after 'secret='), then: manage.py second_factor_setup {username} "
                                  "--code <its current code>")
                return
            recovery = second_factor_confirm(user=user, code=code)
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("Second factor set up. Recovery codes, each usable once (keep them offline):")
        for line in recovery:
            self.stdout.write(f"  {line}")
