"""B11: fair share. One user's ten queued wide jobs hold every worker; another user's small
job, submitted then, gets its share of the pool at once rather than after them. Baseline: the
same small job alone on the same pool, in the same run."""

from __future__ import annotations

import re
import time

from .client import FINISHED, Api, seconds_between, service_seconds
from .measures import Bench, Row

# The product's default (settings.LMWEB_USER_MAX_RUNNING): with the benchmark's own (1000),
# the wide jobs would take every controller and the small job would wait in the queue, a
# starvation the pool cannot help with.
MAX_RUNNING = 4


def first_rule_seconds(api: Api, job: dict) -> float:
    """Submission to the first of its rules starting, by the service's clocks."""
    first = min(task["started_at"] for task in api.tasks(job["id"]) if task["started_at"])
    return seconds_between(job["submitted_at"], first)


def b11_fair_share(bench: Bench) -> list[Row]:
    sizes, stack = bench.sizes, bench.stack
    stack.stop("controller")
    limit = {"LMWEB_USER_MAX_RUNNING": str(MAX_RUNNING)}
    stack.start("controller", "--loglevel", "WARNING", env=limit)
    stack.start_workers(max_workers=sizes.b11_slots)
    small = {"tasks": sizes.b11_small_rules, "seconds": sizes.b11_seconds}
    other = _second_user(bench)

    # Alone: the small job on an idle pool (a warm-up job first, not counted).
    other.wait(other.selftest(1, 0, name="b11-warm-up")["id"], timeout=300)
    alone = other.wait(other.selftest(**small, name="b11-alone")["id"], timeout=1800)
    alone_first, alone_total = first_rule_seconds(other, alone), service_seconds(alone)

    # The wide user's jobs, all queued at once; they hold the pool before the small job comes.
    wide = [
        bench.api.selftest(sizes.b11_wide_rules, sizes.b11_seconds, name=f"b11-wide-{n}")
        for n in range(sizes.b11_wide_jobs)
    ]
    _wait_until(lambda: _busy(stack, bench.api, wide) >= min(MAX_RUNNING, len(wide)), 300)
    time.sleep(2 * sizes.b11_seconds)  # every worker is on a wide job's rule by now
    taken_before = _taken_back(stack.log("workers"))
    shared = other.wait(other.selftest(**small, name="b11-shared")["id"], timeout=1800)
    shared_first, shared_total = first_rule_seconds(other, shared), service_seconds(shared)
    taken = {
        how: count - taken_before[how] for how, count in _taken_back(stack.log("workers")).items()
    }
    for job in wide:
        bench.api.session.post(f"{bench.api.base}/jobs/{job['id']}/cancel/", timeout=60)
    _wait_until(lambda: all(_state(bench.api, job) in FINISHED for job in wide), 600)
    stack.stop("controller")
    stack.start_controller()

    ratio = shared_total / alone_total
    bench.say(
        f"B11: small job first rule {shared_first:.2f} s (alone {alone_first:.2f} s), "
        f"COMPLETE {shared_total:.2f} s (alone {alone_total:.2f} s); workers taken back {taken}"
    )
    what = (
        f"a {sizes.b11_small_rules}-rule job of a second user while one user's "
        f"{sizes.b11_wide_jobs} jobs of {sizes.b11_wide_rules} rules ({sizes.b11_seconds:g} s "
        f"each, {MAX_RUNNING} running at once) hold the pool of {sizes.b11_slots} workers"
    )
    figures = {
        "shared_first_rule_s": shared_first,
        "shared_complete_s": shared_total,
        "alone_first_rule_s": alone_first,
        "alone_complete_s": alone_total,
        "taken_back": taken,
    }
    return [
        Row(
            "B11",
            f"submit to first rule running: {what}",
            f"{shared_first:.2f} s",
            f"the same job alone {alone_first:.2f} s",
            f"{shared_first - alone_first:+.2f} s",
            "<= 5 s",
            shared_first <= 5,
            figures,
        ),
        Row(
            "B11",
            f"submit to COMPLETE: {what} (workers taken back mid-task: {taken['mid-task']})",
            f"{shared_total:.2f} s",
            f"the same job alone {alone_total:.2f} s",
            f"{ratio:.2f}",
            "<= 1.3, no worker taken back mid-task",
            ratio <= 1.3 and taken["mid-task"] == 0,
            figures,
        ),
    ]


def _second_user(bench: Bench) -> Api:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username="bench-b11")
    token, _ = Token.objects.get_or_create(user=user)
    return Api(bench.stack.url, token.key)


def _state(api: Api, job: dict) -> str:
    return api.get(f"/jobs/{job['id']}/")["state"]


def _busy(stack, api: Api, jobs: list[dict]) -> int:
    return sum(api.get(f"/jobs/{job['id']}/")["progress"]["running"] > 0 for job in jobs)


_TAKEN = re.compile(r"took back (an idle worker|a worker at the end|a worker in the middle)")
_HOW = {
    "an idle worker": "idle",
    "a worker at the end": "between tasks",
    "a worker in the middle": "mid-task",
}


def _taken_back(log: str) -> dict[str, int]:
    """Workers the pool took back so far, by how (from its log)."""
    counts = dict.fromkeys(_HOW.values(), 0)
    for found in _TAKEN.findall(log):
        counts[_HOW[found]] += 1
    return counts


def _wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"B11: waited {timeout} s in vain")
        time.sleep(0.2)
