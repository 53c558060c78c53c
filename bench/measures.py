"""B1 to B8: each measure runs the service and its baseline side by side and returns rows."""

from __future__ import annotations

import importlib.util
import os
import statistics
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from . import direct, load
from .client import Api, running_seconds, seconds_between, service_seconds
from .stack import ROOT, Stack


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@dataclass
class Row:
    id: str
    measure: str
    lmweb: str
    baseline: str
    ratio: str
    goal: str
    met: bool
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    """How much work each measure does: FULL for make bench, SMOKE for the test suite."""

    b1_rates: tuple[int, ...]
    b1_seconds: float
    b1_peak_seconds: float
    b1_jobs_before: int
    b2_samples: int
    b3_trivial_tasks: int
    b3_repeats: int
    b3_long_tasks: int
    b3_long_seconds: float
    b4_tasks: int
    b5_jobs: int
    b5_tasks: int
    b5_seconds: float
    b6_bytes: int
    b7_tasks: int
    b7_seconds: float
    b7_slots: tuple[int, ...]
    b8_randomizations: int
    b8_species: int
    b8_side: int
    b11_slots: int
    b11_wide_jobs: int
    b11_wide_rules: int
    b11_small_rules: int
    b11_seconds: float
    b10_species: int
    b10_columns: int
    b10_rows: int
    b10_randomizations: int
    b10_run_seconds: float
    b9_randomizations: int
    b9_species: int
    b9_side: int
    b12_jobs: int
    b12_rules: int
    b12_seconds: float
    b12_dead: int
    b12_factory_jobs: int


FULL = Sizes(
    b1_rates=(100, 200),
    b1_seconds=8,
    b1_peak_seconds=5,
    b1_jobs_before=200,
    b2_samples=20,
    b3_trivial_tasks=200,
    b3_repeats=3,
    b3_long_tasks=60,
    b3_long_seconds=2,
    b4_tasks=1000,
    b5_jobs=5,
    b5_tasks=20,
    b5_seconds=1,
    b6_bytes=1024**3,
    b7_tasks=64,
    b7_seconds=2,
    b7_slots=(1, 2, 4, 8),
    b8_randomizations=1000,
    b8_species=10,
    b8_side=8,
    # The small job's share (half the pool) covers its 20 rules: alone or beside the wide
    # user, it runs them all at once, and the difference is the wait for workers to come back.
    b11_slots=40,
    b11_wide_jobs=10,
    b11_wide_rules=200,
    b11_small_rules=20,
    b11_seconds=2,
    b10_species=7033,
    b10_columns=84,
    b10_rows=68,
    b10_randomizations=100,
    b10_run_seconds=1800,
    # Heuchera's production null model: 10,000 randomizations of its 2,114 x 55 PAM (a generated
    # PAM of 55 species on 46 x 46 cells has about as many sites without LMWEB_SAMPLE_DATA).
    b9_randomizations=10000,
    b9_species=55,
    b9_side=46,
    b12_jobs=10,
    b12_rules=4,
    b12_seconds=1,
    b12_dead=20,
    b12_factory_jobs=1,
)
SMOKE = Sizes(
    b1_rates=(20,),
    b1_seconds=1,
    b1_peak_seconds=1,
    b1_jobs_before=5,
    b2_samples=2,
    b3_trivial_tasks=5,
    b3_repeats=1,
    b3_long_tasks=2,
    b3_long_seconds=0.2,
    b4_tasks=20,
    b5_jobs=2,
    b5_tasks=2,
    b5_seconds=0.1,
    b6_bytes=8 * 1024**2,
    b7_tasks=4,
    b7_seconds=0.2,
    b7_slots=(1, 2),
    b8_randomizations=2,
    b8_species=8,
    b8_side=6,
    b11_slots=2,
    b11_wide_jobs=2,
    b11_wide_rules=3,
    b11_small_rules=2,
    b11_seconds=0.2,
    b10_species=70,
    b10_columns=10,
    b10_rows=6,
    b10_randomizations=2,
    b10_run_seconds=300,
    b9_randomizations=4,
    b9_species=8,
    b9_side=6,
    b12_jobs=2,
    b12_rules=2,
    b12_seconds=0.1,
    b12_dead=3,
    b12_factory_jobs=0,
)

WORKERS = 2  # slots for B2 to B4 and B8: one per core of this machine


class Bench:
    def __init__(self, stack: Stack, api: Api, token: str, sizes: Sizes, log):
        self.stack = stack
        self.api = api
        self.token = token
        self.sizes = sizes
        self.say = log
        self.work = stack.root / "by-hand"
        self.work.mkdir(exist_ok=True)
        self._folders = 0

    def folder(self, name: str) -> Path:
        self._folders += 1
        return self.work / f"{self._folders:03d}-{name}"

    def job_dir(self, job: dict) -> Path:
        return self.stack.root / "data" / "jobs" / job["id"]

    def by_hand(self, job: dict, *, copies: int = 1, workers: int, cores: int = 1) -> float:
        folders = []
        for _ in range(copies):
            folder = self.folder("makeflow")
            direct.copy_workflow(self.job_dir(job), folder)
            folders.append(folder)
        return direct.makeflow_wq(
            folders,
            "main.mf.json",
            workers=workers,
            cores=cores,
            password_file=self.stack.password_file,
        )

    # -- B1 ----------------------------------------------------------------------------------
    def b1_api_load(self) -> list[Row]:
        """Run with no controller: submitted jobs wait in the queue, and are dropped after."""
        sizes, base = self.sizes, self.stack.url
        create = {"workflow": "selftest", "params": {"tasks": 1, "seconds": 0}}
        pick = load.mix_list_create(create)
        for _ in range(sizes.b1_jobs_before):
            self.api.submit(create)
        # Warm both endpoints (gunicorn workers import lazily, connections open).
        load.closed_loop(base, self.token, 8, 1, pick)
        load.closed_loop(base, self.token, 8, 1, self.bare)
        rows = []
        for rate in sizes.b1_rates:
            bare = load.open_loop(base, self.token, rate, sizes.b1_seconds, self.bare)
            self.drain()
            mixed = load.open_loop(base, self.token, rate, sizes.b1_seconds, pick)
            self.drain()
            p50, p99 = mixed.percentile(0.5) * 1000, mixed.percentile(0.99) * 1000
            self.say(
                f"B1 {rate}/s: mixed p50 {p50:.1f} ms p99 {p99:.1f} ms, {mixed.errors} errors "
                f"{mixed.statuses}; bare p99 {bare.percentile(0.99) * 1000:.1f} ms"
            )
            rows.append(
                Row(
                    "B1",
                    f"API 80/20 list/create at {rate} req/s (p50 / p99, errors)",
                    f"{p50:.1f} / {p99:.1f} ms, {mixed.errors} err",
                    f"bare DRF {bare.percentile(0.5) * 1000:.1f} / "
                    f"{bare.percentile(0.99) * 1000:.1f} ms",
                    f"p99 x{p99 / (bare.percentile(0.99) * 1000):.2f}",
                    "p99 <= 50 ms, 0 errors" if rate >= 200 else "0 errors (p99 goal: 200 req/s)",
                    (p99 <= 50 and mixed.errors == 0) if rate >= 200 else mixed.errors == 0,
                    {
                        "rate": rate,
                        "mixed_p50_ms": p50,
                        "mixed_p99_ms": p99,
                        "mixed_errors": mixed.errors,
                        "mixed_sent": mixed.sent,
                        "bare_p50_ms": bare.percentile(0.5) * 1000,
                        "bare_p99_ms": bare.percentile(0.99) * 1000,
                        "bare_errors": bare.errors,
                    },
                )
            )
        # The web's CPU per request beside the rates: on a machine others load too, the rates
        # move with their load, the CPU a request costs much less.
        web = self.stack.web_pids()
        before = _cpu_seconds(web)
        bare = load.closed_loop(base, self.token, 16, sizes.b1_peak_seconds, self.bare)
        bare_cpu = 1000 * (_cpu_seconds(web) - before) / max(bare.sent, 1)
        self.drain()
        before = _cpu_seconds(web)
        mixed = load.closed_loop(base, self.token, 16, sizes.b1_peak_seconds, pick)
        mixed_cpu = 1000 * (_cpu_seconds(web) - before) / max(mixed.sent, 1)
        ratio = mixed.throughput / bare.throughput
        self.say(
            f"B1 peak: mixed {mixed.throughput:.0f}/s ({mixed_cpu:.2f} ms web CPU a request) "
            f"bare {bare.throughput:.0f}/s ({bare_cpu:.2f} ms)"
        )
        rows.append(
            Row(
                "B1",
                "API peak throughput, 16 clients (80/20 list/create; web CPU per request)",
                f"{mixed.throughput:.0f} req/s, {mixed.errors} err; {mixed_cpu:.2f} ms",
                f"bare DRF {bare.throughput:.0f} req/s; {bare_cpu:.2f} ms",
                f"{ratio:.2f} (CPU {bare_cpu / mixed_cpu:.2f})" if mixed_cpu else f"{ratio:.2f}",
                ">= 0.50 of bare",
                ratio >= 0.5 and mixed.errors == 0,
                {
                    "mixed_rps": mixed.throughput,
                    "bare_rps": bare.throughput,
                    "mixed_errors": mixed.errors,
                    "mixed_web_cpu_ms": mixed_cpu,
                    "bare_web_cpu_ms": bare_cpu,
                },
            )
        )
        return rows

    bare = staticmethod(load.only("/bench/bare/"))

    def drain(self, timeout: float = 120) -> None:
        """Wait until the web server has worked off a load run's backlog (a bare request is
        quick again), so that the next run does not pay for the last one."""
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Token {self.token}"}
        while time.monotonic() < deadline:
            start = time.monotonic()
            requests.get(f"{self.stack.url}/bench/bare/", headers=headers, timeout=timeout)
            if time.monotonic() - start < 0.05:
                return
            time.sleep(0.5)

    def drop_queued_jobs(self) -> None:
        from jobs.models import Job

        redis.Redis.from_url(self.stack.broker_url).delete("lmweb-jobs")
        Job.objects.all().delete()

    # -- B2 ----------------------------------------------------------------------------------
    def b2_first_rule(self) -> list[Row]:
        # One job first, not counted: the controller's and the pool's first use warms them up.
        self.api.wait(self.api.selftest(1, 0, name="b2-warm-up")["id"], timeout=120)
        waits = []
        for number in range(self.sizes.b2_samples):
            job = self.api.selftest(1, 0, name=f"b2-{number}")
            job = self.api.wait(job["id"], timeout=120, interval=0.05)
            first = min(
                task["started_at"] for task in self.api.tasks(job["id"]) if task["started_at"]
            )
            waits.append(seconds_between(job["submitted_at"], first))
        waits.sort()
        p95 = waits[min(len(waits) - 1, int(0.95 * len(waits)))]
        hand = self.by_hand(job, workers=1)
        self.say(f"B2 submit to first rule: {[round(w, 2) for w in waits]}")
        return [
            Row(
                "B2",
                f"submit to first rule running, p50 / p95 of {len(waits)} (after a warm-up job)",
                f"{statistics.median(waits):.2f} / {p95:.2f} s",
                f"1-rule makeflow by hand, start to end {hand:.2f} s",
                "",
                "p95 <= 3 s",
                p95 <= 3,
                {"waits_s": waits, "by_hand_s": hand},
            )
        ]

    # -- B3 ----------------------------------------------------------------------------------
    def b3_overhead(self) -> list[Row]:
        sizes, service, hand = self.sizes, [], []
        for _ in range(sizes.b3_repeats):
            job = self.api.wait(self.api.selftest(sizes.b3_trivial_tasks, 0)["id"], timeout=600)
            service.append(service_seconds(job))
            hand.append(self.by_hand(job, workers=WORKERS))
        extra = statistics.median(service) - statistics.median(hand)
        rules = job["progress"]["total"]
        self.say(f"B3 trivial: service {service} by hand {hand}")
        job = self.api.selftest(sizes.b3_long_tasks, sizes.b3_long_seconds)
        long_job = self.api.wait(job["id"], timeout=3600)
        long_service = service_seconds(long_job)
        long_hand = self.by_hand(long_job, workers=WORKERS)
        ratio = long_service / long_hand
        self.say(f"B3 long: service {long_service:.2f} s by hand {long_hand:.2f} s")
        return [
            Row(
                "B3",
                f"{rules} trivial rules, submit to COMPLETE (median of {sizes.b3_repeats})",
                f"{statistics.median(service):.2f} s",
                f"makeflow -T wq by hand {statistics.median(hand):.2f} s",
                f"{extra:+.2f} s",
                "<= +1.5 s",
                extra <= 1.5,
                {"service_s": service, "by_hand_s": hand, "rules": rules},
            ),
            Row(
                "B3",
                f"{sizes.b3_long_tasks} x {sizes.b3_long_seconds:g} s rules on {WORKERS} slots",
                f"{long_service:.2f} s",
                f"makeflow -T wq by hand {long_hand:.2f} s",
                f"{ratio:.3f}",
                "<= 1.05",
                ratio <= 1.05,
                {"service_s": long_service, "by_hand_s": long_hand},
            ),
        ]

    # -- B4 ----------------------------------------------------------------------------------
    def b4_rules_per_second(self) -> list[Row]:
        job = self.api.wait(self.api.selftest(self.sizes.b4_tasks, 0)["id"], timeout=1800)
        rules = job["progress"]["total"]
        service = rules / running_seconds(job)
        end_to_end = rules / service_seconds(job)
        hand = rules / self.by_hand(job, workers=WORKERS)
        ratio = service / hand
        self.say(
            f"B4: service {service:.0f} rules/s ({end_to_end:.0f} from submit), hand {hand:.0f}"
        )
        return [
            Row(
                "B4",
                f"rules per second, {rules} trivial rules (controller start to finish)",
                f"{service:.0f} rules/s",
                f"makeflow -T wq by hand {hand:.0f} rules/s",
                f"{ratio:.2f}",
                ">= 0.75",
                ratio >= 0.75,
                {
                    "service_rps": service,
                    "service_rps_from_submit": end_to_end,
                    "by_hand_rps": hand,
                    "rules": rules,
                },
            )
        ]

    # -- B5 ----------------------------------------------------------------------------------
    def b5_concurrent_jobs(self) -> list[Row]:
        sizes = self.sizes
        self.stack.start_workers(max_workers=sizes.b5_jobs)
        submitted = [self.api.selftest(sizes.b5_tasks, sizes.b5_seconds, name=f"b5-{i}")
                     for i in range(sizes.b5_jobs)]  # fmt: skip
        jobs = [self.api.wait(job["id"], timeout=1800) for job in submitted]
        wall = seconds_between(
            min(job["submitted_at"] for job in jobs), max(job["finished_at"] for job in jobs)
        )
        hand = self.by_hand(jobs[0], copies=sizes.b5_jobs, workers=1)
        ratio = wall / hand
        self.say(f"B5: service {wall:.2f} s, by hand {hand:.2f} s")
        return [
            Row(
                "B5",
                f"{sizes.b5_jobs} jobs at once ({sizes.b5_tasks} x {sizes.b5_seconds:g} s each, "
                f"{sizes.b5_jobs} slots), first submit to last COMPLETE",
                f"{wall:.2f} s",
                f"{sizes.b5_jobs} makeflows by hand, 1 worker each {hand:.2f} s",
                f"{ratio:.2f}",
                "<= 1.10",
                ratio <= 1.10,
                {"service_s": wall, "by_hand_s": hand},
            )
        ]

    # -- B6 ----------------------------------------------------------------------------------
    def b6_download(self) -> list[Row]:
        job = self._finished_job_with_package(self.sizes.b6_bytes)
        package = self.job_dir({"id": str(job.id)}) / "package.zip"
        size = package.stat().st_size
        start = time.monotonic()
        with package.open("rb") as handle:
            while handle.read(1024**2):
                pass
        disk = size / (time.monotonic() - start) / 1e6
        before = {pid: _rss(pid) for pid in self.stack.web_pids()}
        peak = dict(before)
        done = threading.Event()

        def sample():
            while not done.is_set():
                for pid in peak:
                    peak[pid] = max(peak[pid], _rss(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        seconds, received = download_package(self, job.id)
        speed = received / seconds / 1e6
        done.set()
        sampler.join()
        growth = max(peak[pid] - before[pid] for pid in before) / 1e6
        if received != size:
            raise RuntimeError(f"B6: received {received} of {size} bytes")
        self.say(
            f"B6: {speed:.0f} MB/s over HTTP, disk read {disk:.0f} MB/s, growth {growth:.1f} MB"
        )
        return [
            Row(
                "B6",
                f"download of a {size / 1e9:.2f} GB package (web memory growth)",
                f"{speed:.0f} MB/s (+{growth:.1f} MB)",
                f"read from disk {disk:.0f} MB/s",
                f"{speed / disk:.2f}",
                ">= 100 MB/s, growth <= 20 MB",
                speed >= 100 and growth <= 20,
                {"http_mb_s": speed, "disk_mb_s": disk, "rss_growth_mb": growth, "bytes": size},
            )
        ]

    def _finished_job_with_package(self, size: int):
        """A COMPLETE job whose package holds `size` bytes of incompressible data, made here
        rather than computed: the measure is the download, not the work."""
        import os

        from django.contrib.auth import get_user_model
        from django.utils import timezone

        from jobs.models import Job, State

        owner = get_user_model().objects.get(username="bench")
        now = timezone.now()
        job = Job.objects.create(
            owner=owner,
            workflow="selftest",
            name="b6 package",
            request={"workflow": "selftest", "params": {"tasks": 1, "seconds": 0}},
            state=State.COMPLETE,
            started_at=now,
            finished_at=now,
        )
        job.directory.mkdir(parents=True, exist_ok=True)
        block = os.urandom(1024**2)
        path = job.directory / "package.zip"
        with (
            zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive,
            archive.open("outputs/data.bin", "w", force_zip64=True) as member,
        ):
            for _ in range(size // len(block)):
                member.write(block)
        return job

    # -- B7 ----------------------------------------------------------------------------------
    def b7_scaling(self) -> list[Row]:
        sizes, times = self.sizes, {}
        for slots in sizes.b7_slots:
            self.stack.start_workers(max_workers=slots)
            job = self.api.selftest(sizes.b7_tasks, sizes.b7_seconds, name=f"b7-{slots}")
            times[slots] = service_seconds(self.api.wait(job["id"], timeout=1800))
            self.say(f"B7: {slots} slot(s) {times[slots]:.2f} s")
        one, most = times[sizes.b7_slots[0]], max(sizes.b7_slots)
        speedup = one / times[most]
        return [
            Row(
                "B7",
                f"{sizes.b7_tasks} rules x {sizes.b7_seconds:g} s, submit to COMPLETE on "
                + ", ".join(f"{s}" for s in sizes.b7_slots)
                + " slots",
                ", ".join(f"{times[s]:.1f}" for s in sizes.b7_slots) + " s",
                f"1 slot {one:.1f} s",
                f"x{speedup:.2f} at {most}",
                "speed-up >= 6 at 8 slots",
                speedup >= 6 if most >= 8 else speedup > 1,
                {"seconds_by_slots": times, "speedup": speedup},
            )
        ]

    # -- B8 ----------------------------------------------------------------------------------
    def b8_pam_stats(self) -> list[Row]:
        sizes = self.sizes
        self.stack.start_workers(max_workers=WORKERS)
        demo = _demo_module()
        data = self.stack.root / "b8"
        data.mkdir(exist_ok=True)
        names = demo.make_pam(
            data / "pam.lmm", species=sizes.b8_species, side=sizes.b8_side, seed=8
        )
        demo.make_tree(data / "tree.tre", names, seed=8)
        pam = self.api.upload(data / "pam.lmm", "b8 pam")
        tree = self.api.upload(data / "tree.tre", "b8 tree")
        job = self.api.submit(
            {
                "workflow": "pam-stats",
                "name": "b8",
                "inputs": {"pam": pam["id"], "tree": tree["id"]},
                "params": {"randomizations": sizes.b8_randomizations},
            }
        )
        job = self.api.wait(job["id"], timeout=3600, interval=0.5)
        service = service_seconds(job)
        serial = direct.serial(self.job_dir(job), self.folder("serial"))
        self.say(f"B8: service {service:.1f} s, serial by hand {serial:.1f} s")
        return [
            Row(
                "B8",
                f"pam-stats, {sizes.b8_randomizations} randomizations of a {sizes.b8_species}-"
                f"species PAM on {sizes.b8_side}x{sizes.b8_side} cells with a tree "
                f"({job['progress']['total']} rules, {WORKERS} slots), submit to COMPLETE",
                f"{service:.1f} s",
                f"same lmpy commands serially by hand {serial:.1f} s",
                f"{service / serial:.2f}",
                "< 1 (faster than serial)",
                service < serial,
                {"service_s": service, "serial_s": serial, "rules": job["progress"]["total"]},
            )
        ]


def download_package(bench, job_id) -> tuple[float, int]:
    """Seconds and bytes to stream a job's package from the web, in 1 MB pieces."""
    received = 0
    start = time.monotonic()
    with requests.get(
        f"{bench.stack.url}/api/v1/jobs/{job_id}/package/",
        headers={"Authorization": f"Token {bench.token}"},
        stream=True,
        timeout=300,
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1024**2):
            received += len(chunk)
    return time.monotonic() - start, received


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _demo_module():
    """The demo's seeded PAM and tree makers (scripts/demo.py), shared rather than copied."""
    spec = importlib.util.spec_from_file_location("lmweb_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
