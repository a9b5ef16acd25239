"""python manage.py ensure_user NAME [--password P] [--superuser]: an account, created once.

run.sh uses it for the first administrator (a generated password, printed once and kept in a
file only the server's user can read); tests use it for their accounts.
"""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the account NAME unless it exists (then leave it as it is)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", help="default: a generated one, printed once")
        parser.add_argument("--superuser", action="store_true", help="may manage accounts at /admin/")
        parser.add_argument("--password-file", help="also write the generated password to this file (mode 600)")

    def handle(self, *args, username, password=None, superuser=False, password_file=None, **options):
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(f"account {username!r} exists; left unchanged")
            return
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        create = users.objects.create_superuser if superuser else users.objects.create_user
        create(username=username, password=password)
        if password_file:
            import os
            descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(password + "\n")
        shown = f" with password {password}" if generated else ""
        self.stdout.write(f"created {'superuser' if superuser else 'account'} {username!r}{shown}")
