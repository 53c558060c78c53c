"""A single-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's slurm-wlm
(`scripts/setup-test.sh` installs them), each in the foreground as our own child process.

Everything lives under one folder: the munge key and socket, slurm.conf, the state and spool
folders, the logs. The ports are free ones, and the clients (sbatch, squeue, scontrol, scancel)
find this cluster through SLURM_CONF in `env`. This host runs as root without systemd or a
delegated cgroup tree, so processes are tracked through /proc (proctrack/linuxproc) and tasks
are not bound (task/none); there is no accounting database, so finished jobs are read with
`scontrol show job` (kept MinJobAge seconds), not sacct.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
from pathlib import Path

from jobs.cctools.processes import stop_process

from .ports import free_port
from .waiting import wait_until

PARTITION = "lmweb"
NODE = "lmwebnode"

SLURM_CONF = """\
ClusterName=lmwebtest
SlurmctldHost={controller}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.sock
CredType=cred/munge
MailProg=/bin/true
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SingleNodeSlurm:
    """`with SingleNodeSlurm(folder) as slurm:` a running cluster with one idle node; on exit
    its jobs are cancelled and its daemons stopped, and nothing of it is left running."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.partition = PARTITION
        self.node = NODE
        self._daemons: list[subprocess.Popen] = []

    def __enter__(self) -> SingleNodeSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for folder in ("munge", "state", "spool", "run", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(str(self.root / "munge" / "munge.sock")) > 100:  # sun_path holds 108 bytes
            raise ValueError(f"{self.root} is too long a path for the munge socket")
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        self.conf.write_text(
            SLURM_CONF.format(
                root=self.root,
                controller=socket.gethostname().split(".")[0],  # must be this host's name
                ctld_port=free_port(),
                slurmd_port=free_port(),
                node=NODE,
                partition=PARTITION,
                cpus=os.cpu_count(),
            )
        )
        munge = self.root / "munge"
        self._start(
            [
                "/usr/sbin/munged", "--foreground", "--force",
                f"--key-file={key}",
                f"--socket={munge / 'munge.sock'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
            "munged",
        )  # fmt: skip
        wait_until((munge / "munge.sock").exists, timeout=10)
        self._start(["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self._start(["/usr/sbin/slurmd", "-D", "-N", NODE, "-f", str(self.conf)], "slurmd")
        wait_until(lambda: self._node_state() == "idle", timeout=30, interval=0.2)

    def _start(self, args: list[str], name: str) -> None:
        # In the cluster's folder: slurmd's job steps (slurmstepd) inherit its working folder,
        # which is how stop() recognizes any that outlive it.
        self._daemons.append(
            subprocess.Popen(
                args,
                cwd=self.root,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env},
                stdin=subprocess.DEVNULL,
                stdout=(self.root / "log" / f"{name}.out").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def command(self, *args: str, timeout: float = 20) -> str:
        """A Slurm client command against this cluster; its standard output."""
        done = subprocess.run(
            args,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def _node_state(self) -> str:
        try:
            return self.command("sinfo", "-h", "-n", NODE, "-o", "%T").strip()
        except RuntimeError:
            return ""  # the controller is not up yet

    def queue(self) -> list[str]:
        """The ids of the jobs pending or running (squeue)."""
        return self.command("squeue", "-h", "-o", "%i").split()

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dictionary: JobState, Command, WorkDir, NodeList, ..."""
        record = self.command("scontrol", "show", "job", "-o", str(job_id)).strip()
        return dict(field.split("=", 1) for field in record.split() if "=" in field)

    def stop(self) -> None:
        """Cancel every job, stop the daemons, and fail if anything of the cluster outlived
        them (it is killed first)."""
        if self._daemons and self._daemons[-1].poll() is None:
            try:
                if self.queue():
                    self.command("scancel", "--partition", PARTITION)
                wait_until(lambda: not self.queue(), timeout=30, interval=0.2)
            except (RuntimeError, AssertionError, subprocess.TimeoutExpired):
                pass  # the sweep below finds what the cancel missed
        for daemon in reversed(self._daemons):
            stop_process(daemon, grace=5)
        self._daemons.clear()
        leftovers = self._leftovers()
        for pid, _ in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"processes of the Slurm cluster outlived it: {leftovers}"

    def _leftovers(self) -> list[tuple[int, str]]:
        """Processes that belong to this cluster: started in its folder (job steps), naming it
        on their command line, or configured by its slurm.conf (the jobs' processes)."""
        mine = str(self.root)
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                cwd = os.readlink(entry / "cwd")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mine in cmdline or cwd == mine or cwd.startswith(mine + "/") or marker in environ:
                found.append((int(entry.name), cmdline.strip()))
        return found
