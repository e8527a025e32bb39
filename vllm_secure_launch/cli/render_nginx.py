"""`render nginx`: an nginx front with the endpoint gate's allowlist (firewall/nginx.py), made
from the same final plan as `serve`. A refused plan renders nothing and exits 78."""

from __future__ import annotations

from typing import Any

import click

from vllm_secure_launch.cli.render_firewall import PASS, prepare
from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.exitcodes import ExitCode


@click.command("nginx", context_settings=PASS)
@click.option("--listen", default="8080", show_default=True, metavar="[ADDR:]PORT",
              help="nginx `listen` value of the front.")
@click.option("--server-name", default="_", show_default=True, help="nginx server_name.")
@click.option("--tls-cert", default="", metavar="PATH", help="Certificate file (TLS front).")
@click.option("--tls-key", default="", metavar="PATH",
              help="Private key file (TLS front; only its path is written).")
@click.option("--max-body", default="64m", show_default=True, metavar="SIZE",
              help="client_max_body_size (audio and image uploads).")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def nginx(opts: Any, listen: str, server_name: str, tls_cert: str, tls_key: str,
          max_body: str, vllm_args: tuple[str, ...]) -> int:
    """An nginx server block that proxies only the gate's allowlisted routes of
    `vllm serve VLLM_ARGS...` (SSE-friendly; the API key passes through, never written)."""
    from vllm_secure_launch.firewall import nginx as N
    from vllm_secure_launch.plan.gate import parse_policy

    for name, value in (("--listen", listen), ("--server-name", server_name),
                        ("--tls-cert", tls_cert), ("--tls-key", tls_key),
                        ("--max-body", max_body)):
        if any(c in value for c in ' \t\n;{}"\'$#\\'):
            raise UsageError(f"{name} {value!r} would break the nginx configuration",
                             "it is written into the file as one nginx token",
                             f"give {name} without spaces, quotes, ;, {{, }}, $, # or \\")
        if not value and name in ("--listen", "--server-name", "--max-body"):
            raise UsageError(f"{name} is empty", "nginx needs a value there",
                             f"give {name} a value or leave it out for its default")
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert without --tls-key, or the other way round",
                         "a TLS front needs both its certificate and its key",
                         "give both --tls-cert and --tls-key, or neither")
    prepared = prepare(opts, vllm_args)
    table = parse_policy(prepared.policy.gate_policy).table
    front = N.Front(listen, server_name, tls_cert, tls_key, max_body)
    try:
        text = N.render(prepared.plan, table, front, prepared.policy.api_allowed_sources)
    except N.FrontError as exc:
        raise UsageError(str(exc), "the front would not match what vLLM serves",
                         "see docs/firewall.md, `render nginx`") from None
    click.echo(text, nl=False)
    return int(ExitCode.OK)
