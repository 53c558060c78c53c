"""A makeflow writes only inside its job folder, whatever a worker (or a relay) replies."""

import contextlib
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.makeflow import confinement
from jobs.cctools.workers import start_worker
from jobs.execution import controller

from .conftest import write_dag

pytestmark = pytest.mark.integration

# A worker returns an output as "file <name> <size>\n" and <size> bytes (CCTools 9.9); the
# manager writes it to the rule's output path followed by whatever comes after the name it
# asked for, creating folders on the way.
FILE_HEADER = re.compile(rb"^file (\S+) ([0-9]+)$")
# A task's result carries its standard output: "result <status> <exit> <length> ...".
RESULT_HEADER = re.compile(rb"^result -?[0-9]+ -?[0-9]+ ([0-9]+) ")


class Relay:
    """A TCP relay between workers and a manager that renames every file a worker returns."""

    def __init__(self, manager_port: int, suffix: str) -> None:
        self.manager_port = manager_port
        self.suffix = suffix.encode()
        self.rewritten: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                worker, _ = self.server.accept()
            except OSError:
                return
            manager = socket.create_connection(("127.0.0.1", self.manager_port))
            self.sockets += [worker, manager]
            threading.Thread(target=self._copy, args=(manager, worker), daemon=True).start()
            threading.Thread(target=self._rewrite, args=(worker, manager), daemon=True).start()

    def _copy(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        self._shut(target)

    def _rewrite(self, source: socket.socket, target: socket.socket) -> None:
        """Line by line, passing payloads (file contents, task output) through untouched."""
        buffered, payload = b"", 0
        try:
            while data := source.recv(65536):
                buffered += data
                while buffered:
                    if payload:
                        chunk, buffered = buffered[:payload], buffered[payload:]
                        payload -= len(chunk)
                        target.sendall(chunk)
                        continue
                    line, newline, rest = buffered.partition(b"\n")
                    if not newline:
                        break
                    buffered = rest
                    if match := FILE_HEADER.match(line):
                        line = b"file %s%s %s" % (match[1], self.suffix, match[2])
                        self.rewritten.append(line)
                        payload = int(match[2])
                    elif match := RESULT_HEADER.match(line):
                        payload = int(match[1])
                    target.sendall(line + b"\n")
        except OSError:
            pass
        self._shut(target)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self.sockets:
            self._shut(sock)
            sock.close()


def escapes(tmp_path: Path) -> dict[str, tuple[str, Path]]:
    """Replies that lead out of the job folder: into its parent, and to an absolute path."""
    inside = tmp_path / "jobs" / "job" / "out.txt"
    climb = "/.." * len(inside.parts)
    return {
        "parent": ("/../../escaped.txt", tmp_path / "jobs" / "escaped.txt"),
        "absolute": (climb + str(tmp_path / "elsewhere" / "escaped.txt"), tmp_path / "elsewhere"),
    }


def run_through_relay(procs, tmp_path: Path, suffix: str, *, confine: bool):
    workdir = tmp_path / "jobs" / "job"
    dag = write_dag(workdir, [{"command": "echo hello > out.txt", "outputs": ["out.txt"]}])
    run = procs.start(workdir, dag, confine=confine)
    relay = Relay(run.port, suffix)
    try:
        procs.track(
            start_worker(
                host="127.0.0.1",
                port=relay.port,
                password_file=procs.password_file,
                cores=1,
                scratch_dir=tmp_path / "scratch",
                idle_timeout=30,
                single_shot=True,
            )
        )
        run.wait(timeout=30)
        assert relay.rewritten, "the relay saw no returned file"
        (rule,) = makeflowlog.read_rules(workdir, dag)
        return workdir, rule
    finally:
        run.stop(grace=5)
        relay.close()


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_a_reply_naming_a_path_outside_the_job_folder_writes_nothing_and_is_reported(
    procs, tmp_path, where
):
    suffix, outside = escapes(tmp_path)[where]
    workdir, rule = run_through_relay(procs, tmp_path, suffix, confine=True)

    # Makeflow counts the rule done (the manager made out.txt a folder on the way), but
    # Work Queue reports that its output never arrived: the controller fails the job on that
    # (tests/integration/test_execution.py).
    assert rule.result == "OUTPUT_MISS"
    assert not outside.exists()
    assert sorted((tmp_path / "jobs").iterdir()) == [workdir]
    with pytest.raises(RuntimeError, match=r"outputs of rule\(s\) node-0 \(OUTPUT_MISS\)"):
        controller._check_returned_outputs(workdir, "main", "test.mf.json")


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_unconfined_the_same_reply_writes_outside_the_job_folder(procs, tmp_path, where):
    """The twin of the test above: the relay's replies do escape a makeflow left unconfined
    (CCTools 9.9), so the confined test cannot pass for a harmless relay."""
    suffix, outside = escapes(tmp_path)[where]
    _, rule = run_through_relay(procs, tmp_path, suffix, confine=False)

    assert rule.result == "SUCCESS"
    # Unconfined, nothing tells the controller: the job would complete.
    controller._check_returned_outputs(tmp_path / "jobs" / "job", "main", "test.mf.json")
    written = outside if outside.suffix else outside / "escaped.txt"
    assert written.read_text() == "hello\n"


def test_confinement_leaves_the_job_folder_and_its_tmpdir_writable_and_nothing_else(tmp_path):
    workdir, tmpdir = tmp_path / "job", tmp_path / "tmp"
    workdir.mkdir()
    tmpdir.mkdir()
    probe = "echo a > {0}/a && echo b > {1}/b && (echo c > {2}/c) 2>/dev/null; echo $?"
    args = confinement(workdir, [tmpdir])
    done = subprocess.run(
        [*args, "/bin/sh", "-c", probe.format(workdir, tmpdir, tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() != "0"
    assert (workdir / "a").exists() and (tmpdir / "b").exists()
    assert not (tmp_path / "c").exists()
