"""Rows and clients the tests make, made one way: users with tokens, uploaded datasets, jobs."""

import io

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.models import Job


def make_user(username: str, *, staff: bool = False):
    return get_user_model().objects.create_user(
        username=username, password="pw-" + username, is_staff=staff
    )


def token_client(user) -> APIClient:
    """An API client that authenticates as `user` with its token (anonymous for None)."""
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.user = user
    return client


def upload(client: APIClient, filename: str, content: bytes, **extra):
    """POST a file to /api/v1/datasets/ the way a user's multipart client would."""
    handle = io.BytesIO(content)
    handle.name = filename
    return client.post("/api/v1/datasets/", {"file": handle, **extra}, format="multipart")


def make_job(owner, *, workflow: str = "selftest", request: dict | None = None, **fields) -> Job:
    """A job row as submission would store it, without a broker message: no controller runs it."""
    return Job.objects.create(owner=owner, workflow=workflow, request=request or {}, **fields)
