"""Create the demo user (staff, for the admin) with a token, and print how to log in."""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Ensure the demo user exists; print the URL, the admin login and the API token."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print as JSON")

    def handle(self, *args, username: str, url: str, as_json: bool, **options):
        credentials_file = settings.DATA_DIR / "demo-credentials.json"
        saved = {}
        if credentials_file.exists():
            saved = _load(credentials_file)
        password = saved.get("password") or secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        token, _ = Token.objects.get_or_create(user=user)
        credentials = {"url": url, "username": username, "password": password, "token": token.key}
        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(_dump(credentials))
        credentials_file.chmod(0o600)
        if as_json:
            self.stdout.write(_dump(credentials))
            return
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"  API:        {url}/api/v1/",
                    f"  API docs:   {url}/api/docs/",
                    f"  Admin:      {url}/admin/  (user {username!r}, password {password!r})",
                    f"  API token:  {token.key}",
                    f"  Try:        curl -H 'Authorization: Token {token.key}' {url}/api/v1/jobs/",
                    "",
                ]
            )
        )


def _load(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"
