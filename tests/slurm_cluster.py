"""A throwaway one-node SLURM cluster on this machine for the tests: the ``slurm_cluster`` fixture.

Debian's ``slurm-wlm`` and ``munge`` packages provide the daemons (``.ci/run`` installs them); without them,
or without root (``slurmd`` launches jobs as their users), the tests that need the cluster are skipped with
a message saying so. Everything lives in one fresh temporary directory: the MUNGE key and socket, the
generated ``slurm.conf``, the controller's state, the node's spool and the logs, so a run leaves nothing
that a second run could trip on, and two runs at once do not meet (free ports, their own socket).

The cluster: ``munged``, ``slurmctld`` and ``slurmd`` in the foreground (``-D``: children of this process,
stopped at the end even when tests fail), the node as it really is (``slurmd -C``: its hostname, CPUs and
cores; 90% of its memory), one default partition, ``proctrack/linuxproc`` and ``task/none`` (no cgroups),
no accounting (``sacct`` says so: submitit then waits for a job's result file alone), and short
timeouts: ``KillWait`` (SIGTERM to SIGKILL) and ``cred_expire`` (how long a requeued job waits before it
may start again; SLURM's default is 120 s). ``SLURM_CONF`` points every client (``sbatch``, ``squeue``, ...)
and every job of the session at it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
KILL_WAIT_S = 30  # SIGTERM, then SIGKILL this much later: room for a trial to write last.pt and its result
CRED_EXPIRE_S = 5  # a requeued job may start again this long after it ended (SLURM's default: 120 s)
START_TIMEOUT_S = 30


def missing() -> list[str]:
    """The binaries of the cluster that are not installed (daemons in /usr/sbin, clients on PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name, path=path) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """A one-node cluster in ``root`` (see the module docstring); ``env`` is what a client or a job needs."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mlc-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.host = socket.gethostname()
        self.env = os.environ | {"SLURM_CONF": str(self.conf)}
        self.env["PATH"] = os.pathsep.join([self.env.get("PATH", ""), "/usr/sbin", "/sbin"])
        self.daemons: dict[str, subprocess.Popen] = {}

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command (``scontrol``, ``squeue``, ...) against this cluster."""
        result = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        return result

    def start(self) -> None:
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._daemon("munged", "--foreground", "--force", f"--socket={self.root / 'munge.sock'}",
                     f"--key-file={key}", f"--log-file={self.root / 'munged.log'}",
                     f"--pid-file={self.root / 'munged.pid'}", f"--seed-file={self.root / 'munged.seed'}")
        self._wait(lambda: (self.root / "munge.sock").exists(), "munged to open its socket")
        self.conf.write_text(self._slurm_conf())
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        self._daemon("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf), "-N", self.host)
        self._wait(self._node_idle, f"node {self.host} to be idle in sinfo")

    def _slurm_conf(self) -> str:
        node = self.run("slurmd", "-C").stdout.splitlines()[0]  # "NodeName=vm CPUs=2 ... RealMemory=24105"
        memory = int(re.search(r"RealMemory=(\d+)", node).group(1))
        node = re.sub(r"RealMemory=\d+", f"RealMemory={int(memory * 0.9)}", node)
        node = re.sub(r"^NodeName=\S+", f"NodeName={self.host} NodeAddr=127.0.0.1", node)
        r = self.root
        return "\n".join([
            "ClusterName=mlctest", f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge.sock'},cred_expire={CRED_EXPIRE_S}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}", f"SlurmdLogFile={r / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1", "ReturnToService=2", "SlurmctldTimeout=10", "SlurmdTimeout=10",
            "InactiveLimit=0", f"KillWait={KILL_WAIT_S}", "MinJobAge=30", "SlurmctldDebug=info", "SlurmdDebug=info",
            f"{node} State=UNKNOWN", f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            ""])

    def _daemon(self, name: str, *args: str) -> None:
        out = open(self.root / f"{name}.out", "wb")  # (its own log file holds the rest)
        self.daemons[name] = subprocess.Popen([shutil.which(name, path=self.env["PATH"]), *args], env=self.env,
                                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def _node_idle(self) -> bool:
        result = self.run("sinfo", "-h", "-n", self.host, "-o", "%T", check=False, timeout=10)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [n for n, p in self.daemons.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"waited for {what}: " + (f"{', '.join(dead)} exited" if dead else "timed out")
                                   + "\n" + self.logs())
            time.sleep(0.2)

    def logs(self, lines: int = 15) -> str:
        """The last lines of every daemon's log, for a failure message."""
        out = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def jobs(self) -> list[str]:
        """``<job id> <state>`` of every job the controller still knows (running, pending, requeued)."""
        return self.run("squeue", "-h", "-o", "%i %T", check=False).stdout.split("\n")[:-1]

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons (slurmd, slurmctld, munged) and delete everything."""
        try:
            if self.daemons.get("slurmctld") and self.daemons["slurmctld"].poll() is None:
                self.run("scancel", "--user", str(os.geteuid()), check=False, timeout=10)
                deadline = time.monotonic() + KILL_WAIT_S + 5
                while self.jobs() and time.monotonic() < deadline:
                    time.sleep(0.5)
        finally:
            for name in reversed(DAEMONS):
                process = self.daemons.get(name)
                if process is None or process.poll() is not None:
                    continue
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node SLURM cluster for the session (``SlurmCluster``), ``SLURM_CONF`` set for every process the
    tests start; stopped and deleted at the end. Skips without slurm-wlm/munge, or when not root."""
    absent = missing()
    if absent:
        pytest.skip(f"slurm-wlm/munge not installed: no {', '.join(absent)}; install Debian's slurm-wlm and "
                    f"munge packages (.ci/run does) to run the SLURM tests")
    if os.geteuid() != 0:
        pytest.skip("the SLURM tests start slurmd, which must run as root to launch jobs (CI runs as root)")
    cluster = SlurmCluster()
    started = time.monotonic()
    previous = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        print(f"\nSLURM cluster up in {time.monotonic() - started:.1f} s: node {cluster.host}, {cluster.conf}")
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()
