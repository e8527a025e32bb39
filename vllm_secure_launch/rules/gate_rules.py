"""Endpoint gate and probe rules (VSL250–VSL299). IDs are stable and never reused.

VSL250–VSL259: the gate's configuration, judged by the planner (gate_config.findings).
VSL260–VSL269: what `vllm-secure-launch probe` found on a running server.
"""

from __future__ import annotations

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.rules.registry import Rule

NO_API_KEY = Rule(
    id="VSL250",
    title="the endpoint gate has no API key",
    severity=Severity.ERROR,
    remedy=("give the key in VLLM_API_KEY (or the launcher's key file option), or set "
            "gate.enabled = false in the policy if this server must run without a key"),
    doc=("The gate fails closed: without a key every allowlisted route that needs one (all "
         "inference) answers 401, so the server would only serve /health."),
)

GATE_DISABLED = Rule(
    id="VSL251",
    title="the endpoint gate is disabled",
    severity=Severity.WARNING,
    remedy="remove gate.enabled = false from the policy",
    doc=("Without the gate only vLLM's own --api-key check runs, and it covers only /v1, /v2, "
         "/inference and /cohere: /invocations (full inference), /tokenize, /metrics, /docs, "
         "/scale_elastic_ep and the dev routes answer anyone who can reach the port."),
)

KEY_VAR_MISSING = Rule(
    id="VSL252",
    title="a key variable named by the gate policy is empty or unset",
    severity=Severity.ERROR,
    remedy=("export the variable (VSL_GATE_KEY_<NAME>) in the launcher's environment, or "
            "remove it from gate.allow[].keys"),
    doc="Routes that accept only that key would answer 401 to everyone.",
)

SENSITIVE_PUBLIC = Rule(
    id="VSL253",
    title="the gate policy makes a sensitive route public",
    severity=Severity.WARNING,
    remedy="use auth = \"key\" for the route, or remove it from gate.public / gate.allow",
    doc=("A route that runs inference, changes state or leaks data is reachable without a "
         "key (for example /invocations with auth = \"none\")."),
)

OPERATIONAL_ALLOWED = Rule(
    id="VSL254",
    title="the gate policy allowlists an operational or development route",
    severity=Severity.WARNING,
    remedy=("remove the route from gate.allow, or give it a key of its own "
            "(keys = [\"VSL_GATE_KEY_OPS\"]) that inference clients do not hold"),
    doc=("Routes such as /pause, /sleep, /scale_elastic_ep, /collective_rpc, /start_profile, "
         "LoRA loading and fault tolerance change the running service."),
)

PROBE_OPEN_HIGH = Rule(
    id="VSL260",
    title="a route that runs inference, changes state or leaks data answers without a key",
    severity=Severity.ERROR,
    remedy=("start vLLM through `vllm-secure-launch serve` (the endpoint gate closes it), or "
            "put an allowlisting proxy in front and keep the port off untrusted networks"),
    doc="probe reached the route's handler (or its router, for routes probed with GET only) "
        "without any credential.",
)

PROBE_OPEN_LOW = Rule(
    id="VSL261",
    title="an information route answers without a key",
    severity=Severity.ERROR,
    remedy=("start vLLM through the launcher (gate denies it by default), or allowlist it "
            "deliberately and pass --allow-open PATH to probe"),
    doc="Versions, the OpenAPI schema, metrics and load counters help an attacker.",
)

PROBE_DENIED_WITH_KEY = Rule(
    id="VSL262",
    title="a route the gate denies by default is reachable with the API key",
    severity=Severity.ERROR,
    remedy=("start vLLM through the launcher; if the route is allowlisted on purpose, pass "
            "--allow-open PATH to probe"),
    doc="Anyone holding the inference key can use an operational or development route.",
)

PROBE_UNCLEAR = Rule(
    id="VSL263",
    title="probe could not classify a route",
    severity=Severity.WARNING,
    remedy="look at the status in the report; retry when the server is healthy",
    doc="The route answered with a status that says neither open, key required nor absent "
        "(for example 500 or 503).",
)

PROBE_PATH_TRICK = Rule(
    id="VSL264",
    title="a path variant reaches a route that is closed under its plain path",
    severity=Severity.ERROR,
    remedy=("the proxy or gate in front normalises paths differently from vLLM: put the "
            "launcher's endpoint gate in front (it refuses ambiguous paths)"),
    doc=("probe sends variants of /invocations (double slashes, trailing slash, percent "
         "escapes, dot segments, case, `;` parameters). Where /invocations itself is closed, "
         "a variant answered by vLLM's router is a way around the filter."),
)

RULES = (NO_API_KEY, GATE_DISABLED, KEY_VAR_MISSING, SENSITIVE_PUBLIC, OPERATIONAL_ALLOWED,
         PROBE_OPEN_HIGH, PROBE_OPEN_LOW, PROBE_DENIED_WITH_KEY, PROBE_UNCLEAR,
         PROBE_PATH_TRICK)
