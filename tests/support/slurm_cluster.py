"""A real, throw-away Slurm cluster for the tests (shared/reference/slurm-test-cluster.md):
munged + slurmctld in the root namespace, one slurmd per "node" in its own network + UTS +
mount namespace. Debian's slurm-wlm 22.05; root only.

    bridge vslsbr0  10.213.0.1/24  (internal; slurmctld is reached here)
    bridge vslsbq0  198.18.213.1/24 ("public")
    node i: netns vslsn<i>, eth0 10.213.0.1<i> (internal), pub0 198.18.213.1<i>,
            Slurm name node<i> -> resolves to the internal address,
            hostname vslpub<i> -> resolves to the public address (so a bare vLLM's gloo picks
            the public one, as on a host whose hostname resolves to its public NIC).

The hosts file is bind-mounted over /etc/hosts in each node's mount namespace only. Teardown
cancels jobs, kills exactly the recorded daemons (checking their cmdline against PID reuse) and
removes every namespace, veth and bridge it created.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NET, PUBNET = "10.213.0", "198.18.213"
BR, PUBBR, NS = "vslsbr0", "vslsbq0", "vslsn"
CTLD_PORT, SLURMD_PORT = 16917, 16918
DAEMONS = ("slurmd", "slurmctld", "munged")


def available() -> str | None:
    """Why the cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "a Slurm cluster in namespaces needs root"
    for cmd in ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "ip", "nsenter",
                "unshare"):
        if shutil.which(cmd) is None:
            return f"{cmd} is not installed (scripts/test installs slurm-wlm and munge)"
    return None


def sh(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, env=env)


@dataclass
class Cluster:
    base: Path
    nodes: int = 2
    cpus: int = 2
    pids: list[int] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def internal(self, i: int) -> str:
        return f"{NET}.{10 + i}"

    def public(self, i: int) -> str:
        return f"{PUBNET}.{10 + i}"

    def netns(self, i: int) -> str:
        return f"{NS}{i}"

    # ---- bring-up ---------------------------------------------------------------------------

    def up(self) -> None:
        for d in ("etc", "ctld/state", "log", "munge"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.base / "munge", 0o755)
        self._munge()
        self._network()
        self._config()
        self._start(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self._wait(lambda: " is UP" in sh("scontrol", "ping", check=False,
                                          env=self.env()).stdout, "slurmctld")
        for i in range(1, self.nodes + 1):
            inner = (f"mount --bind {self.base}/etc/hosts /etc/hosts && hostname vslpub{i} && "
                     f"exec slurmd -D -N node{i} -f {self.conf}")
            self._start(["nsenter", f"--net=/run/netns/{self.netns(i)}", "unshare", "--uts",
                         "--mount", "sh", "-c", inner], f"slurmd-node{i}")
        self._wait(self._all_idle, "slurmd")

    def _munge(self) -> None:
        m = self.base / "munge"
        sh("mungekey", "--create", f"--keyfile={m}/munge.key")
        os.chmod(m / "munge.key", 0o400)
        sh("munged", f"--key-file={m}/munge.key", f"--socket={m}/munge.socket",
           f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
           f"--seed-file={m}/munged.seed")
        self.pids.append(int((m / "munged.pid").read_text()))

    def _network(self) -> None:
        hosts = [ln for ln in Path("/etc/hosts").read_text().splitlines() if ln.strip()]
        for br, net in ((BR, NET), (PUBBR, PUBNET)):
            sh("ip", "link", "add", br, "type", "bridge")
            sh("ip", "addr", "add", f"{net}.1/24", "dev", br)
            sh("ip", "link", "set", br, "up")
        for i in range(1, self.nodes + 1):
            ns = self.netns(i)
            sh("ip", "netns", "add", ns)
            for outer, inner, br, addr in ((f"vslsv{i}", "eth0", BR, self.internal(i)),
                                           (f"vslsp{i}", "pub0", PUBBR, self.public(i))):
                sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
                sh("ip", "link", "set", outer, "master", br, "up")
                sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
                sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            hosts += [f"{self.internal(i)} node{i}", f"{self.public(i)} vslpub{i}"]
        (self.base / "etc" / "hosts").write_text("\n".join(hosts) + "\n")

    def _config(self) -> None:
        b = self.base
        lines = [
            "ClusterName=vsltest", f"SlurmctldHost=localhost({NET}.1)",
            f"SlurmctldPort={CTLD_PORT}", f"SlurmdPort={SLURMD_PORT}", "SlurmUser=root",
            "SlurmdUser=root", "AuthType=auth/munge", f"AuthInfo=socket={b}/munge/munge.socket",
            "CredType=cred/munge", f"StateSaveLocation={b}/ctld/state",
            f"SlurmctldPidFile={b}/ctld/slurmctld.pid", f"SlurmctldLogFile={b}/log/slurmctld.log",
            f"SlurmdSpoolDir={b}/%n/spool", f"SlurmdPidFile={b}/%n/slurmd.pid",
            f"SlurmdLogFile={b}/log/slurmd-%n.log", "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "MpiDefault=none", "SwitchType=switch/none", "MailProg=/bin/true",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU", "SlurmdParameters=config_overrides",
            "ReturnToService=2", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=10",
        ]
        for i in range(1, self.nodes + 1):
            (b / f"node{i}" / "spool").mkdir(parents=True, exist_ok=True)
            lines.append(f"NodeName=node{i} NodeHostname=vslpub{i} NodeAddr={self.internal(i)} "
                         f"CPUs={self.cpus} RealMemory=1024 State=UNKNOWN")
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        (b / "etc" / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")

    def _start(self, cmd: list[str], name: str) -> None:
        out = open(self.base / "log" / f"{name}.out", "wb")
        p = subprocess.Popen(["setsid", *cmd], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=self.env())
        self.pids.append(p.pid)  # setsid/nsenter/unshare/sh all exec: this is the daemon

    def _all_idle(self) -> bool:
        r = sh("sinfo", "-h", "-N", "-o", "%T", check=False, env=self.env())
        return r.stdout.split().count("idle") == self.nodes

    def _wait(self, ok, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text(errors="replace")[-1500:]
                                 for p in (self.base / "log").glob("*.out"))
                raise RuntimeError(f"{what} did not come up:\n{logs}")
            time.sleep(0.05)

    # ---- use --------------------------------------------------------------------------------

    def in_node(self, i: int, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run cmd in node i's network namespace (the root mount namespace)."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns(i)}", *cmd],
                              capture_output=True, text=True, timeout=timeout)

    def squeue(self) -> list[str]:
        return sh("squeue", "-h", "-o", "%i %T", check=False, env=self.env()).stdout.split("\n")

    def job_state(self, job: str) -> str:
        r = sh("scontrol", "show", "job", job, check=False, env=self.env())
        for tok in r.stdout.split():
            if tok.startswith("JobState="):
                return tok.split("=", 1)[1]
        return "GONE"

    # ---- teardown ---------------------------------------------------------------------------

    def down(self) -> None:
        if self.conf.exists():
            jobs = [ln.split()[0] for ln in self.squeue() if ln.strip()]
            if jobs:
                sh("scancel", *jobs, check=False, env=self.env())
                deadline = time.monotonic() + 30
                while [ln for ln in self.squeue() if ln.strip()] and time.monotonic() < deadline:
                    time.sleep(0.2)
        for pid in reversed(self.pids):
            if _is_daemon(pid):
                os.kill(pid, 15)
        deadline = time.monotonic() + 15
        while any(_is_daemon(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids:
            if _is_daemon(pid):
                os.kill(pid, 9)
        self.pids.clear()
        remove_network(self.nodes)


def _is_daemon(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(d.encode() in cmdline for d in DAEMONS)


def remove_network(nodes: int = 2) -> None:
    for i in range(1, nodes + 1):
        for link in (f"vslsv{i}", f"vslsp{i}"):
            sh("ip", "link", "del", link, check=False)
        sh("ip", "netns", "del", f"{NS}{i}", check=False)
    for br in (BR, PUBBR):
        sh("ip", "link", "del", br, check=False)


def leftovers(nodes: int = 2) -> list[str]:
    """What of the cluster is still there: namespaces, links, daemons."""
    out = []
    names = sh("ip", "netns", "list", check=False).stdout
    out += [f"netns {NS}{i}" for i in range(1, nodes + 1) if f"{NS}{i}" in names]
    links = sh("ip", "-br", "link", check=False).stdout
    out += [f"link {n}" for n in (BR, PUBBR, *(f"vslsv{i}" for i in range(1, nodes + 1)))
            if n in links]
    return out
