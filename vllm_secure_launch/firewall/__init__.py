"""Kernel-enforced network policy for vLLM's process tree (issue 12, docs/firewall.md).

spec.py     the pure policy -> nftables ruleset text (the same text the dry run shows)
cgroup.py   cgroup v2 discovery (/sys/fs/cgroup or the hybrid /sys/fs/cgroup/unified)
holder.py   stdlib only: libnftables through ctypes; loads the owner-flagged table and keeps
            its netlink socket open (run by the keeper, which outlives the launcher)
enforce.py  decide auto|enforce|strict|off, arm before spawn, clean up after
render.py   the host firewall ruleset and the systemd unit for `render`
"""
