"""The one settings table: every launcher setting, once.

The policy file's sections and keys, the `VSL_*` environment names, the click options of the
launcher (cli/options.py), defaults, choices, bounds, metavars, help texts and the settings
reference (`settings_markdown`, for docs/settings.md) are all made from `SETTINGS`. The Policy
dataclass (config/policy.py) holds one field per file setting; a test checks that they match.

Pure data: no click, no I/O, nothing at import but the table.
"""

from __future__ import annotations

from typing import Any

from vllm_secure_launch.records import record

# Value kinds, named as the file's error messages name them.
STR, NUMBER, BOOL, LIST = "string", "number", "boolean", "list of strings"

# How a list is written in VSL_* and on the command line.
COMMA, SHELL = "comma", "shell"

# What each item of a list must be (checked by config/policy.py); "" for any string.
CIDR = "CIDR"

# Bounds of a number (all numbers are durations in seconds).
POSITIVE, NON_NEGATIVE = "positive", "zero or more"

DEFAULT_POLICY_PATH = "/etc/vllm-secure-launch/policy.toml"


@record
class Setting:
    """One setting. `section` None: not a policy key (only an option and its VSL_* name)."""

    key: str  # Policy field and click parameter name
    section: str | None
    kind: str
    default: Any
    help: str  # one sentence: what it means
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    option: bool = True  # also a launcher option (before the subcommand)
    file_key: str | None = None  # the key in the file when it differs from `key`
    bound: str | None = None  # numbers: POSITIVE or NON_NEGATIVE
    list_syntax: str = COMMA
    default_text: str | None = None  # how help and docs show the default, when not repr-able
    bound_why: str = ""  # why the bound matters, for the error message
    items: str = ""  # lists: CIDR, or "" for any string

    @property
    def env(self) -> str:
        return "VSL_" + self.key.upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def in_file(self) -> str:
        return self.file_key or self.key

    def shown_default(self) -> str:
        """The default as a user writes it ("" when there is none)."""
        if self.default_text is not None:
            return self.default_text
        if self.kind == BOOL:
            return "true" if self.default else "false"
        if self.kind == NUMBER:
            return f"{self.default:g}"
        if self.kind == LIST:
            return ", ".join(self.default)
        return str(self.default)


_ZERO_WHY = "an audit every 0 s would spin, and a 0 s readiness wait can never succeed"

SETTINGS: tuple[Setting, ...] = (
    Setting("policy", None, STR, "", "Policy TOML file.", metavar="PATH",
            default_text=f"{DEFAULT_POLICY_PATH} if present"),
    # [launcher]
    Setting("vllm_command", "launcher", LIST, (),
            "Command that starts vLLM's serve, e.g. 'vllm-mindspore serve' (split like a shell "
            "command line).", metavar="CMD", list_syntax=SHELL,
            default_text="vLLM of this Python environment"),
    Setting("accelerator", "launcher", STR, "auto", "Accelerator platform.",
            choices=("auto", "cuda", "ascend", "cpu")),
    Setting("ready_timeout", "launcher", NUMBER, 1800.0, "Wait this long for /health.",
            metavar="SECONDS", bound=POSITIVE, bound_why=_ZERO_WHY),
    Setting("audit", "launcher", STR, "enforce", "Socket audit mode.",
            choices=("enforce", "warn", "off")),
    Setting("audit_interval", "launcher", NUMBER, 1.0, "Audit period.", metavar="SECONDS",
            bound=POSITIVE, bound_why=_ZERO_WHY),
    Setting("stop_grace", "launcher", NUMBER, 30.0,
            "Grace before the process tree is killed on stop.", metavar="SECONDS",
            bound=NON_NEGATIVE),
    Setting("hang_timeout", "launcher", NUMBER, 120.0,
            "SIGKILL vLLM's tree (exit 79) when GET /health fails this long while serving; "
            "0: off.", metavar="SECONDS", bound=NON_NEGATIVE),
    Setting("log_format", "launcher", STR, "text", "The launcher's own stderr lines.",
            choices=("text", "json")),
    Setting("format", "launcher", STR, "text", "Report format of dry-run, check and preflight.",
            choices=("text", "json", "sarif")),
    Setting("report", "launcher", STR, "", "Also write the JSON report here.", metavar="PATH"),
    Setting("dry_run", "launcher", BOOL, False,
            "Print the plan and exit 0 (would start) or 78 (refused)."),
    Setting("runtime_dir", "launcher", STR, "",
            "Base of the launcher's private run directory (vLLM's RPC sockets and TMPDIR).",
            metavar="PATH",
            option=False,
            default_text="$RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR or the temp dir"),
    # [api]
    Setting("firewall", "launcher", STR, "auto",
            "Kernel firewall for vLLM's process tree (nftables + cgroup v2): auto enforces when "
            "privileged, else warns; enforce refuses to start without it; strict also limits "
            "egress (docs/firewall.md).", choices=("auto", "enforce", "strict", "off")),
    Setting("api_host", "api", STR, "127.0.0.1", "API address used when vLLM's --host is absent.",
            metavar="IP", file_key="host"),
    Setting("allow_wildcard", "api", BOOL, False, "Allow an API on 0.0.0.0 or ::."),
    Setting("api_key_file", "api", STR, "", "File holding the API key, mode 0600.",
            metavar="PATH"),
    Setting("api_allowed_sources", "api", LIST, (),
            "Networks the API port accepts connections from, e.g. '192.0.2.0/24,10.0.0.0/8' "
            "(kernel firewall, render nftables/systemd; docs/firewall.md).", metavar="CIDRS",
            file_key="allowed_sources", items=CIDR,
            default_text="anywhere the API address is reachable"),
    # [network]
    Setting("internal_iface", "network", STR, "", "Private interface for all internal traffic.",
            metavar="NAME", default_text="none (loopback)"),
    Setting("internal_cidr", "network", STR, "", "Pick the internal address by subnet.",
            metavar="CIDR"),
    Setting("internal_ip", "network", STR, "", "The internal address itself.", metavar="IP"),
    Setting("allow_loopback", "network", BOOL, True,
            "The socket audit also accepts listeners on loopback.", option=False),
    # [vllm]
    Setting("plugins", "vllm", LIST, (),
            "vLLM plugins allowed to load (VLLM_PLUGINS is pinned to this list).", option=False),
    Setting("allowed_media_dirs", "vllm", LIST, (),
            "Directories vLLM may read media from (--allowed-local-media-path).", option=False),
    Setting("tcpstore_guard", "vllm", BOOL, True,
            "Install the guard that keeps torch's TCPStore off public addresses.", option=False),
    # [cluster] — multi-node derivation (cluster/, docs/multinode.md)
    Setting("slurm", "cluster", STR, "auto",
            "Derive ranks, head address and ports from the Slurm step (auto: inside one).",
            choices=("auto", "on", "off")),
    Setting("node_list", "cluster", STR, "",
            "Outside Slurm: all nodes, head first, e.g. 'gpu[01-04]'.", metavar="HOSTLIST"),
    Setting("node_rank", "cluster", STR, "",
            "Outside Slurm: this node's index in the node list.", metavar="N"),
    Setting("npu_peers", "cluster", STR, "",
            "Multi-node Ascend: the peers' NPU addresses that preflight pings with hccn_tool: "
            "an HCCL rank table file, a file with one IP per line (a file is named by a path "
            "with a '/', e.g. ./rank_table.json), or IPs separated by commas (the same on "
            "every node; each node leaves out its own).",
            metavar="FILE|IPS"),
    # [ray] — the Ray backend (`ray start` through the launcher, serve on Ray; docs/ray.md)
    Setting("ray_token_file", "ray", STR, "",
            "Ray's token file (RAY_AUTH_TOKEN_PATH), mode 0600; `ray start --head` creates it "
            "when absent.", metavar="PATH"),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
# The policy file's sections in table order; [gate] and [waivers] have shapes of their own.
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS if s.section))
OTHER_SECTIONS = ("gate", "waivers")


def file_settings() -> tuple[Setting, ...]:
    """The settings a policy file (and the Policy dataclass) holds."""
    return tuple(s for s in SETTINGS if s.section is not None)


def options() -> tuple[Setting, ...]:
    """The settings that are also launcher options, in --help order."""
    return tuple(s for s in SETTINGS if s.option)


def option_help(s: Setting, text: str | None = None) -> str:
    """Help text of an option: meaning, then [env name; default]."""
    default = s.shown_default()
    tail = f"{s.env}; default {default}" if default else s.env
    return f"{(text or s.help).rstrip('.')}. [{tail}]"


# ---------------------------------------------------------------------------------------------
# The settings reference (docs/settings.md is generated from this)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def settings_markdown() -> str:
    """The settings reference as a Markdown table: option, env, policy key, default, choices,
    meaning. Precedence: command line > environment > policy file > defaults."""
    head = ("| option | env | policy key | default | choices | meaning |\n"
            "|---|---|---|---|---|---|")
    rows = []
    for s in SETTINGS:
        spelled = f"{s.flag}/--no-{s.flag[2:]}" if s.kind == BOOL else \
            f"{s.flag} {s.metavar}" if s.metavar else s.flag
        option = _code(spelled) if s.option else ""
        key = _code(f"[{s.section}] {s.in_file}") if s.section else ""
        default = s.shown_default()
        default = _code(default) if s.default_text is None and default else default
        choices = ", ".join(_code(c) for c in s.choices)
        meaning = s.help + (f" Kind: {s.kind}." if s.kind not in (STR, BOOL) else "")
        if s.kind == BOOL:
            meaning += f" `{s.env}` takes 1/0, true/false, yes/no, on/off."
        if s.kind == LIST:
            sep = "a shell-like command line" if s.list_syntax == SHELL else "comma-separated"
            meaning += f" In `{s.env}`: {sep}."
        if s.items == CIDR:
            meaning += " Each item an IP network (CIDR) or address."
        if s.bound:
            meaning += f" Must be {s.bound} and finite."
        rows.append("| " + " | ".join(_cell(c) for c in (option, _code(s.env), key, default,
                                                          choices, meaning)) + " |")
    return "\n".join([head, *rows]) + "\n"
