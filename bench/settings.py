"""The product's settings plus one bare DRF endpoint, the baseline of the API load test (B1)."""

from lmweb.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
