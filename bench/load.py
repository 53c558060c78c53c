"""HTTP load: an open loop at a fixed rate (latency counted from each request's scheduled
time, so a slow server cannot hide its queue) and a closed loop for peak throughput."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

Request = tuple[str, str, bytes | None]  # method, path, JSON body


@dataclass
class LoadResult:
    sent: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return (self.sent - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _one(session, base: str, request: Request, result: LoadResult, since: float) -> None:
    method, path, body = request
    headers = {"Content-Type": "application/json"} if body is not None else None
    result.sent += 1
    try:
        async with session.request(method, base + path, data=body, headers=headers) as response:
            await response.read()
            result.statuses[response.status] = result.statuses.get(response.status, 0) + 1
            if response.status >= 400:
                result.errors += 1
                return
    except (aiohttp.ClientError, TimeoutError):
        result.errors += 1
        return
    result.latencies.append(time.monotonic() - since)


def _session(token: str, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Token {token}"},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def _open_loop(base, token, rate, seconds, pick) -> LoadResult:
    result = LoadResult()
    async with _session(token, connections=256) as session:
        start = time.monotonic()
        pending = []
        for number in range(int(rate * seconds)):
            due = start + number / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(_one(session, base, pick(number), result, due)))
        await asyncio.gather(*pending)
        result.seconds = time.monotonic() - start
    return result


async def _closed_loop(base, token, clients, seconds, pick) -> LoadResult:
    result = LoadResult()
    counter = iter(range(10**9))
    async with _session(token, connections=clients) as session:
        start = time.monotonic()
        stop = start + seconds

        async def client():
            while time.monotonic() < stop:
                await _one(session, base, pick(next(counter)), result, time.monotonic())

        await asyncio.gather(*(client() for _ in range(clients)))
        result.seconds = time.monotonic() - start
    return result


def open_loop(base: str, token: str, rate: float, seconds: float, pick: Callable) -> LoadResult:
    return asyncio.run(_open_loop(base, token, rate, seconds, pick))


def closed_loop(base: str, token: str, clients: int, seconds: float, pick) -> LoadResult:
    return asyncio.run(_closed_loop(base, token, clients, seconds, pick))


def mix_list_create(create_body: dict) -> Callable[[int], Request]:
    """One request in five submits a job; the other four list the user's jobs."""
    body = json.dumps(create_body).encode()

    def pick(number: int) -> Request:
        if number % 5 == 0:
            return ("POST", "/api/v1/jobs/", body)
        return ("GET", "/api/v1/jobs/", None)

    return pick


def only(path: str) -> Callable[[int], Request]:
    return lambda number: ("GET", path, None)
