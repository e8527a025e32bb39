"""Multi-node Ascend: the NPU network (the RoCE ports HCCL uses between nodes), checked the way
vllm-ascend's install guide does before a multi-node run (vllm-project/vllm-ascend
docs/source/installation.md, "Multi-node Deployment" -> "Verify Multi-Node Communication"):

  per NPU this node uses   hccn_tool -i N -link -g          "link status: UP"        (VSL552)
                           hccn_tool -i N -net_health -g    "net health status: Success"
  the node's NPU addresses cat /etc/hccn.conf               address_N= per used NPU  (VSL582)
  between nodes            hccn_tool -i N -ping -g address PEER
                                                            "..., 0.00% packet loss" (VSL583)

Every problem is collected (one finding per rule, all causes listed), and an answer that
cannot be read is a blocking finding of its own (VSL584): fail closed.

The peers' NPU addresses are not something a node knows; the operator gives them once for the
whole job with --npu-peers (docs/multinode.md): the HCCL rank table file an Ascend cluster
already has for HCCL/MindSpore (server_list[].device[].device_ip), a file with one address per
line, or a comma-separated list. The same value serves every node: this node's own NPU
addresses (from /etc/hccn.conf, else `hccn_tool -i N -ip -g`) are left out of it.

Which local NPU pings a peer: the one whose own address/netmask (hccn.conf netmask_N) holds
the peer address (Ascend RoCE planes are usually one subnet per NPU index), else the first
NPU this node uses (routed through the NPU gateway, as the guide's `hccn_tool -i 0 -ping`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass

from vllm_secure_launch.findings import Finding
from vllm_secure_launch.host.view import HostView
from vllm_secure_launch.preflight.request import PreflightRequest
from vllm_secure_launch.rules.preflight_rules import rule

HCCN_CONF = "/etc/hccn.conf"
MULTINODE_DESTS = ("master_addr", "data_parallel_address", "headless")
_LINK = re.compile(r"link status:\s*(\w+)", re.I)
_HEALTH = re.compile(r"net health status:\s*(\w+)", re.I)
_CONF_LINE = re.compile(r"^\s*(address|netmask)_(\d+)\s*=\s*(\S+)\s*$")
_IPADDR = re.compile(r"^\s*ipaddr\s*:\s*(\S+)", re.M)
_NETMASK = re.compile(r"^\s*netmask\s*:\s*(\S+)", re.M)
_LOSS = re.compile(r"(\d+) packets transmitted,\s*(\d+) received,\s*([\d.]+)% packet loss")
_PING_FAILED = ("recv time out seq", "Destination Host Unreachable", "Message too long",
                "pkt send fail seq")
MAX_PEERS = 1024  # a rank table of 128 nodes x 8 NPUs; more is a mistake, not a cluster


class PeerError(ValueError):
    """The --npu-peers value cannot be used (VSL581)."""


@dataclass(frozen=True)
class NpuAddress:
    ip: str
    netmask: str | None = None

    def holds(self, other: str) -> bool:
        """Whether `other` is in this NPU's subnet (False without a usable netmask)."""
        if not self.netmask:
            return False
        try:
            net = ipaddress.ip_network(f"{self.ip}/{self.netmask}", strict=False)
            return ipaddress.ip_address(other) in net
        except ValueError:
            return False


# ---------------------------------------------------------------------------------------------
# Pure parsers


def parse_hccn_conf(text: str) -> dict[int, NpuAddress]:
    """/etc/hccn.conf -> {NPU index: address}; lines other than address_N/netmask_N are
    ignored (the file also holds gateway_N, netdetect_N, ...)."""
    addrs: dict[int, str] = {}
    masks: dict[int, str] = {}
    for line in text.splitlines():
        m = _CONF_LINE.match(line)
        if m:
            (addrs if m.group(1) == "address" else masks)[int(m.group(2))] = m.group(3)
    return {i: NpuAddress(ip, masks.get(i)) for i, ip in addrs.items()}


def parse_ip_g(text: str) -> NpuAddress | None:
    """`hccn_tool -i N -ip -g`: "ipaddr:192.168.100.101\\nnetmask:255.255.255.0"."""
    ip, mask = _IPADDR.search(text), _NETMASK.search(text)
    return NpuAddress(ip.group(1), mask.group(1) if mask else None) if ip else None


def parse_ping(returncode: int | None, text: str) -> tuple[bool | None, str]:
    """-> (answered, summary). None: the output holds no verdict (VSL584)."""
    m = _LOSS.search(text)
    failed = next((w for w in _PING_FAILED if w in text), None)
    if m:
        sent, got, loss = int(m.group(1)), int(m.group(2)), m.group(3)
        ok = sent > 0 and got == sent and float(loss) == 0.0 and returncode == 0
        return ok, f"{got}/{sent} received, {loss}% packet loss"
    if failed:
        return False, failed
    return None, ""


def _valid_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise PeerError(f"{text.strip()!r} is not an IP address") from None


def _rank_table_ips(doc: object) -> list[str]:
    """device_ip of every device of every server in an HCCL rank table (v1.0 and v1.2 keep
    them at server_list[].device[].device_ip)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("server_list"), list):
        raise PeerError("a JSON peer file must be an HCCL rank table with a server_list")
    out = []
    for server in doc["server_list"]:
        devices = server.get("device") if isinstance(server, dict) else None
        if not isinstance(devices, list):
            raise PeerError("a server_list entry has no device list")
        for dev in devices:
            ip = dev.get("device_ip") if isinstance(dev, dict) else None
            if not isinstance(ip, str):
                raise PeerError("a device of the rank table has no device_ip")
            out.append(ip)
    return out


def parse_peers(text: str) -> list[str]:
    """A peer file's text (rank table JSON, or one address per line, # comments) or a
    comma-separated list -> unique canonical IPs in order. Raises PeerError."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            raw = _rank_table_ips(json.loads(stripped))
        except json.JSONDecodeError as exc:
            raise PeerError(f"the rank table is not valid JSON ({exc.msg}, line "
                            f"{exc.lineno})") from None
    else:
        raw = [tok for line in stripped.splitlines()
               for tok in line.split("#", 1)[0].replace(",", " ").split()]
    ips = list(dict.fromkeys(_valid_ip(t) for t in raw))
    if not ips:
        raise PeerError("it names no address")
    if len(ips) > MAX_PEERS:
        raise PeerError(f"it names {len(ips)} addresses (at most {MAX_PEERS})")
    return ips


def pair(peers: list[str], own: dict[int, NpuAddress], devices: list[int]
         ) -> list[tuple[int, str]]:
    """(local NPU, peer address) to ping: the NPU whose subnet holds the peer, else the
    first NPU used."""
    out = []
    for peer in peers:
        dev = next((d for d in devices if d in own and own[d].holds(peer)), devices[0])
        out.append((dev, peer))
    return out


def is_multinode(req: PreflightRequest) -> bool:
    # The derivation (cluster/derive.py) writes one of these on every node of a multi-node
    # layout; a hand-written multi-node command line has them too.
    return any(d in req.set_dests for d in MULTINODE_DESTS)


# ---------------------------------------------------------------------------------------------
# The check


@dataclass
class _Found:
    """The problems of one run, one list per rule: reported together, not first-one-wins."""

    down: list[str]
    unreadable: list[str]
    unconfigured: list[str]
    unanswered: list[str]

    def findings(self) -> list[Finding]:
        out = []
        for rule_id, subject, items in (("VSL552", "npu network", self.down),
                                        ("VSL584", "hccn_tool", self.unreadable),
                                        ("VSL582", "hccn.conf", self.unconfigured),
                                        ("VSL583", "npu peers", self.unanswered)):
            if items:
                out.append(rule(rule_id).finding(subject, "; ".join(items)))
        return out


def find_tool(req: PreflightRequest, host: HostView) -> str | None:
    exe = host.which("hccn_tool", req.environ.get("PATH"))
    if exe:
        return exe
    p = host.ascend("driver", "tools", "hccn_tool")
    return p if os.access(p, os.X_OK) else None


def check(req: PreflightRequest, host: HostView, devices: list[int]) -> list[Finding]:
    out: list[Finding] = []
    conf_path = host.hccn_conf
    conf_text = host.read_text(conf_path)
    if conf_text is None:
        out.append(rule("VSL554").finding("hccn.conf", f"{conf_path} does not exist or cannot "
                                          "be read"))
    own = parse_hccn_conf(conf_text) if conf_text is not None else {}
    peers, peer_findings = _peers(req, host)
    out.extend(peer_findings)
    exe = find_tool(req, host)
    if exe is None:
        out.append(rule("VSL553").finding("hccn_tool", "hccn_tool was not found on PATH or in "
                                          "the driver's tools directory"))
        return out
    if not devices:
        return out  # no usable NPU: VSL515/VSL543 already say why
    found = _Found([], [], [], [])
    _ports(exe, host, devices, found)
    if conf_text is not None:
        found.unconfigured.extend(f"NPU {d}: no address_{d}= in {conf_path}"
                                  for d in devices if d not in own)
    else:
        own = _live_addresses(exe, host, devices, found)
    answered = 0
    if peers is not None:
        own_ips = {a.ip for a in own.values()}
        remote = [p for p in peers if p not in own_ips]
        if not remote:
            out.append(rule("VSL581").finding(
                "--npu-peers", "it names only this node's own NPU addresses "
                f"({', '.join(peers[:8])}); the peers' are missing"))
        answered = _pings(exe, host, pair(remote, own, devices), found)
    out.extend(found.findings())
    if not any(f.blocking for f in out):
        out.append(rule("VSL585").finding(
            "npu network", f"{len(devices)} NPU(s) link UP and healthy; {answered} peer NPU "
            "address(es) answered the ping"))
    return out


def _peers(req: PreflightRequest, host: HostView) -> tuple[list[str] | None, list[Finding]]:
    value = req.npu_peers.strip()
    if not value:
        return None, [rule("VSL580").finding(
            "--npu-peers", "no --npu-peers: the peers' NPU addresses cannot be pinged")]
    text = value
    if "/" in value:  # a path (an address list never holds '/')
        text = host.read_text(os.path.expanduser(value)) or ""
        if not text:
            return None, [rule("VSL581").finding(
                "--npu-peers", f"--npu-peers {value}: the file is missing, unreadable or "
                "empty")]
    try:
        return parse_peers(text), []
    except PeerError as exc:
        return None, [rule("VSL581").finding("--npu-peers", f"--npu-peers {value}: {exc}")]


def _said(res: object) -> str:
    text = (getattr(res, "stdout", "").strip() or getattr(res, "stderr", "").strip()
            or getattr(res, "error", None) or "")
    return (text.splitlines()[-1] if text else "no output")[:160]


def _ports(exe: str, host: HostView, devices: list[int], found: _Found) -> None:
    for dev in devices:
        for what, pattern, good, said in (("-link", _LINK, "UP", "link"),
                                          ("-net_health", _HEALTH, "SUCCESS", "net health")):
            res = host.run([exe, "-i", str(dev), what, "-g"], host.npu_smi_timeout)
            m = pattern.search(res.stdout)
            if m is None:
                found.unreadable.append(f"`hccn_tool -i {dev} {what} -g`: "
                                        f"{res.error or f'exit status {res.returncode}'}: "
                                        f"{_said(res)}")
            elif m.group(1).upper() != good or res.returncode != 0:
                found.down.append(f"NPU {dev}: {said} {m.group(1)}")


def _live_addresses(exe: str, host: HostView, devices: list[int], found: _Found
                    ) -> dict[int, NpuAddress]:
    """Without /etc/hccn.conf: the NPUs' own addresses as the device reports them."""
    own = {}
    for dev in devices:
        res = host.run([exe, "-i", str(dev), "-ip", "-g"], host.npu_smi_timeout)
        addr = parse_ip_g(res.stdout) if res.returncode == 0 else None
        if addr is None:
            found.unreadable.append(f"`hccn_tool -i {dev} -ip -g`: {_said(res)}")
        else:
            own[dev] = addr
    return own


def _pings(exe: str, host: HostView, pairs: list[tuple[int, str]], found: _Found) -> int:
    answered = 0
    # One at a time: hccn_tool refuses concurrent calls ("hccn_tool is busy").
    for dev, peer in pairs:
        res = host.run([exe, "-i", str(dev), "-ping", "-g", "address", peer],
                       host.npu_smi_timeout)
        ok, summary = parse_ping(res.returncode, res.stdout + "\n" + res.stderr)
        if ok is None:
            found.unreadable.append(f"`hccn_tool -i {dev} -ping -g address {peer}`: "
                                    f"{res.error or f'exit status {res.returncode}'}: "
                                    f"{_said(res)}")
        elif not ok:
            found.unanswered.append(f"NPU {dev} -> {peer}: {summary}")
        else:
            answered += 1
    return answered
