"""CORS values and local media paths judged as vLLM/Starlette will read them (issue 10)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_planner import KEY, host, plan_for
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.host.facts import SecretFile

KEYED = {"VLLM_API_KEY": KEY}


def ids(plan):
    return {f.rule_id for f in plan.findings if f.blocking}


@pytest.mark.parametrize("origins,creds,want", [
    ('["https://a.example"]', True, set()),
    ('["*"]', True, {"VSL208"}),
    ('"*"', True, {"VSL208", "VSL225"}),                 # a JSON string: substring test
    ('"https://*.a.example"', True, {"VSL208", "VSL225"}),
    ('{"*": 1}', True, {"VSL208", "VSL225"}),            # an object: key test
    ('"https://a.example"', False, {"VSL225"}),
    ('["*"]', False, set()),                              # no credentials: the key still guards
])
def test_cors_as_starlette_reads_it(origins, creds, want):
    argv = ["m", "--allowed-origins", origins, *(["--allow-credentials"] if creds else [])]
    assert ids(plan_for(argv, KEYED)) & {"VSL208", "VSL225"} == want


def test_starlette_semantics_pinned():
    """The rule's model of Starlette, checked against Starlette itself."""
    from starlette.middleware.cors import CORSMiddleware

    from vllm_secure_launch.rules.flag_rules import cors_allows_all

    for value in ("*", "https://*.a", {"*": 1}, ["*"], ["https://a"], "https://a"):
        mw = CORSMiddleware(app=None, allow_origins=value)  # type: ignore[arg-type]
        assert mw.allow_all_origins is cors_allows_all(value), value


@pytest.mark.parametrize("path,cwd,real,fires", [
    ("/srv/media", "/", None, False),
    ("//", "/", None, True),                       # canonicalises to /
    ("/srv/../etc", "/", None, True),
    (".", "/", None, True),                        # the service's cwd is /
    ("media", "/srv", None, False),
    ("media", "/home/svc", None, True),            # relative, inside /home
    ("/srv/link", "/", "/etc", True),              # a symlink to /etc
    ("/run/credentials/vllm.service", "/", None, True),
    ("/var/run/secrets/kubernetes.io/serviceaccount", "/", None, True),
    ("/var", "/", None, True),                     # contains /var/run and the kubelet's volumes
    ("/data/models", "/", None, False),
])
def test_media_paths_canonicalised(path, cwd, real, fires):
    facts = host(cwd=cwd, realpaths={path: real} if real else {})
    plan = plan_for(["m", "--allowed-local-media-path", path], KEYED, facts=facts)
    assert ("VSL209" in ids(plan)) is fires


def test_media_root_holding_the_key_file_is_refused():
    facts = host(api_key_file=SecretFile("/srv/keys/api.key", KEY, 0o600))
    plan = plan_for(["m", "--allowed-local-media-path", "/srv"], {},
                    Policy(api_key_file="/srv/keys/api.key"), facts=facts)
    assert "VSL209" in ids(plan)


def test_policy_allowed_media_dir_wins():
    policy = dataclasses.replace(Policy(), allowed_media_dirs=("/home/svc/media",))
    plan = plan_for(["m", "--allowed-local-media-path", "/home/svc/media"], KEYED, policy)
    assert "VSL209" not in ids(plan)
