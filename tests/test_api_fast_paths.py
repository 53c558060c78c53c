"""The API's fast paths (bench/, B1) answer what DRF's own paths answer: a page and its count in
one query, JSON by orjson, throttle windows in Redis in one round trip."""

import json

import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import caches
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import renderers
from rest_framework.test import APIRequestFactory

from jobs.api.pagination import OneQueryPaginator
from jobs.api.renderers import JSONRenderer
from jobs.api.serializers import JobSerializer
from jobs.api.throttles import UserRateThrottle
from jobs.models import Job, State
from tests.support.factories import make_job

pytestmark = pytest.mark.django_db


def _jobs(owner, count: int) -> list[Job]:
    return [make_job(owner, name=f"job {number}") for number in range(count)]


class TestOnePageOneQuery:
    def test_a_page_and_its_count_come_in_one_query(self, api):
        _jobs(api.user, 7)
        with CaptureQueriesContext(connection) as queries:
            page = api.get("/api/v1/jobs/?page_size=3&page=2").json()
        selects = [q["sql"] for q in queries if "jobs_job" in q["sql"]]
        assert len(selects) == 1, selects
        assert page["count"] == 7 and len(page["results"]) == 3

    @pytest.mark.parametrize("number", [1, 2, 3, "last", 4, 9, 0, -1, "x", "9" * 100, 2.0])
    @pytest.mark.parametrize("count", [0, 6, 7])
    def test_pages_counts_and_errors_are_djangos(self, make_user, count, number):
        _jobs(make_user("pager"), count)
        queryset = Job.objects.order_by("-submitted_at", "id")

        def outcome(paginator_class):
            paginator = paginator_class(queryset, 3)
            wanted = paginator.num_pages if number == "last" else number
            try:
                page = paginator.page(wanted)
            except Exception as exc:  # the kind and message of Django's refusal
                return type(exc).__name__, str(exc)
            return paginator.count, [job.pk for job in page], page.has_next()

        assert outcome(OneQueryPaginator) == outcome(Paginator)

    def test_a_values_queryset_is_paged_in_one_query_too(self, make_user):
        _jobs(make_user("values"), 4)
        paginator = OneQueryPaginator(Job.objects.order_by("-submitted_at").values("id"), 3)
        with CaptureQueriesContext(connection) as queries:
            page = paginator.page(2)
        assert len(queries) == 1 and paginator.count == 4 and len(page) == 1

    def test_a_staff_list_names_each_owner(self, api, other_api, staff_api):
        make_job(api.user)
        make_job(other_api.user)
        owners = {job["owner"] for job in staff_api.get("/api/v1/jobs/").json()["results"]}
        assert owners == {"alice", "bob"}
        assert {job["owner"] for job in api.get("/api/v1/jobs/").json()["results"]} == {"alice"}

    def test_a_listed_job_is_the_document_its_own_url_gives(self, api):
        job = make_job(api.user, state=State.EXECUTOR_ERROR, error_code="RULE_FAILED")
        make_job(api.user, tags={"project": "heuchera"}, request={"params": {"tasks": 1}})
        listed = api.get("/api/v1/jobs/").json()["results"]
        request = APIRequestFactory().get("/api/v1/jobs/")
        for document in listed:
            one = JobSerializer(
                Job.objects.get(pk=document["id"]), context={"request": request, "detail": False}
            ).data
            assert document == json.loads(json.dumps(one))
        assert {doc["id"] for doc in listed} >= {str(job.id)}


class TestJsonRenderer:
    DOCUMENTS = [
        {"name": "line\u2028and\u2029paragraph", "ñ": "ü", "n": [1, 2.5, None, True]},
        {"big": 2**70},  # past orjson's 64 bits: DRF's renderer writes it
        {1: "a key that is not a string"},
    ]

    @pytest.mark.parametrize("document", DOCUMENTS)
    def test_it_writes_the_bytes_drf_writes(self, document):
        assert JSONRenderer().render(document) == renderers.JSONRenderer().render(document)

    def test_a_job_page_is_the_same_bytes(self, api):
        make_job(api.user, name='ñame "quoted" <b>', tags={"k": "v\u2028"})
        response = api.get("/api/v1/jobs/")
        assert response.content == renderers.JSONRenderer().render(response.json())

    def test_indented_json_is_drfs(self, api):
        make_job(api.user)
        response = api.get("/api/v1/jobs/", HTTP_ACCEPT="application/json; indent=4")
        assert response.content.startswith(b'{\n    "count": 1')


class TestThrottleWindow:
    @pytest.fixture
    def throttle(self, make_user, settings):
        user = make_user("throttled")
        request = APIRequestFactory().get("/api/v1/jobs/")
        request.user = user

        def make(rate: str, now: float) -> tuple[UserRateThrottle, bool]:
            throttle = UserRateThrottle()
            throttle.rate = rate
            throttle.num_requests, throttle.duration = throttle.parse_rate(rate)
            throttle.timer = lambda: now
            return throttle, throttle.allow_request(request, None)

        yield make
        caches["default"].delete(f"throttle_user_{user.pk}:times")

    def test_it_counts_a_sliding_window_as_drf_does(self, throttle):
        assert [throttle("3/m", 1000.0 + t)[1] for t in (0, 1, 2)] == [True] * 3
        refused, allowed = throttle("3/m", 1030.0)
        assert allowed is False
        assert refused.wait() == pytest.approx(30.0)  # until the first request leaves the window
        assert throttle("3/m", 1060.5)[1] is True  # the first left; the refused one never counted
        assert throttle("3/m", 1060.6)[1] is False

    def test_the_window_is_one_sorted_set_in_redis(self, throttle):
        first, _ = throttle("5/m", 2000.0)
        throttle("5/m", 2001.0)
        client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
        key = caches["default"].make_key(first.key)
        assert client.type(key) == b"zset" and client.zcard(key) == 2
        assert 0 < client.ttl(key) <= 60
