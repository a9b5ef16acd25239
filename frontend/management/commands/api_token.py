"""python manage.py api_token USER [--label L]: a new API key for USER, printed once."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from frontend.models import ApiToken


class Command(BaseCommand):
    help = "Make an API key for an account and print it (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--label", default="")

    def handle(self, *args, username, label, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"there is no account {username!r}")
        _, key = ApiToken.issue(user, label)
        self.stdout.write(key)
