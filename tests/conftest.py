"""Shared fixtures: users with tokens, API clients, a private data directory per test."""

import io
import zipfile
from pathlib import Path

import pytest

from jobs.cctools.catalog import start_catalog_server, wait_for_catalog
from jobs.cctools.processes import stop_process

# Tests make their inputs (tests/synthetic.py); those that also check the real sample data read it
# from LMWEB_SAMPLE_DATA only (tests.synthetic.sample_data) and skip without it.


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    settings.DATA_DIR = path
    return path


@pytest.fixture
def make_user(db, django_user_model):
    def make(username: str, *, staff: bool = False):
        return django_user_model.objects.create_user(
            username=username, password="pw-" + username, is_staff=staff
        )

    return make


def _client_for(user):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.user = user
    return client


@pytest.fixture
def api(make_user, data_dir):
    return _client_for(make_user("alice"))


@pytest.fixture
def other_api(make_user, data_dir):
    return _client_for(make_user("bob"))


@pytest.fixture
def staff_api(make_user, data_dir):
    return _client_for(make_user("operator", staff=True))


@pytest.fixture
def anon_api(db, data_dir):
    return _client_for(None)


def upload(client, filename: str, content: bytes, **extra):
    """POST a file to /api/v1/datasets/ the way a user's multipart client would."""
    handle = io.BytesIO(content)
    handle.name = filename
    return client.post("/api/v1/datasets/", {"file": handle, **extra}, format="multipart")


def lmm_bytes() -> bytes:
    """A tiny but real lmpy matrix: a zip with headers.json and data.npz."""
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("headers.json", '{"0": [[0, 0.5, 0.5]], "1": ["sp_a", "sp_b"]}')
        npz = io.BytesIO()
        np.savez_compressed(npz, data=np.array([[1, 0]]))
        archive.writestr("data.npz", npz.getvalue())
    return buffer.getvalue()


@pytest.fixture
def pam_dataset(api):
    response = upload(api, "pam.lmm", lmm_bytes())
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def tree_dataset(api):
    response = upload(api, "tree.tre", b"((sp_a:1,sp_b:1):1);\n")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture(autouse=True, scope="session")
def _private_cache_keys():
    """Throttle counts live in Redis, shared by every process: this session's own key prefix
    keeps them from mixing with another run's (user ids repeat across test databases)."""
    import contextlib
    import copy
    import uuid

    from django.conf import settings
    from django.test import override_settings

    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["KEY_PREFIX"] = f"lmweb-test-{uuid.uuid4().hex[:12]}"
    with override_settings(CACHES=caches):
        yield
        from django.core.cache import cache

        with contextlib.suppress(Exception):
            cache.clear()  # this prefix's keys only (lmweb.cache.RedisCache)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Password hashing is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def catalog(tmp_path_factory):
    """A private catalog server on a free port, for the whole session: "127.0.0.1:PORT"."""
    from tests.runner.conftest import free_port

    folder = tmp_path_factory.mktemp("catalog")
    port = free_port()
    server = start_catalog_server(
        port=port, history_dir=folder / "history", log_path=folder / "catalog.log"
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_for_catalog(address, timeout=10)
        yield address
    finally:
        stop_process(server, grace=2)
