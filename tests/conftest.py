"""Shared fixtures: users with tokens, API clients, a private data directory per test."""

from pathlib import Path

import pytest

from jobs.cctools.catalog import start_catalog_server, wait_for_catalog
from jobs.cctools.processes import stop_process
from tests.support import factories
from tests.support.factories import upload
from tests.support.payloads import TREE, lmm_bytes
from tests.support.ports import free_port

# Tests make their inputs (tests/synthetic.py); those that also check the real sample data read it
# from LMWEB_SAMPLE_DATA only (tests.synthetic.sample_data) and skip without it.


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    settings.DATA_DIR = path
    return path


@pytest.fixture
def make_user(db):
    return factories.make_user


def _client_for(user):
    return factories.token_client(user)


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


@pytest.fixture
def pam_dataset(api):
    response = upload(api, "pam.lmm", lmm_bytes())
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def tree_dataset(api):
    response = upload(api, "tree.tre", TREE)
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
