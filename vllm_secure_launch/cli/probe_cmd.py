"""`vllm-secure-launch probe URL` (issue 5): check a running vLLM for routes open without a key.

Exit 0 when nothing sensitive is open, 77 when something is, 2 for usage errors and an
unreachable server. Sends only requests that change nothing (see vllm_secure_launch/probe.py).
"""

from __future__ import annotations

import click

from vllm_secure_launch.cli.options import Seconds
from vllm_secure_launch.exitcodes import ExitCode


@click.command("probe")
@click.argument("url")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Report format on stdout.")
@click.option("--api-key-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the API key: routes that need a key are also tried with it, "
                   "to find routes the gate should deny whatever the key. Never give the key "
                   "on the command line.")
@click.option("--timeout", type=Seconds(min=0.1, max=300), default=5.0,
              show_default=True, help="Seconds per request.")
@click.option("--insecure", is_flag=True,
              help="https: do not verify the server certificate (self-signed test servers).")
@click.option("--allow-open", "allow_open", multiple=True, metavar="PATH",
              help="A route that is open on purpose (e.g. /metrics for a scraper); repeatable.")
def command(url: str, fmt: str, api_key_file: str | None, timeout: float, insecure: bool,
            allow_open: tuple[str, ...]) -> int:
    """Check a running vLLM at URL (http[s]://HOST:PORT[/ROOT]) for every known route:
    open / needs a key / absent. Exit 0: nothing sensitive is open; 77: something is."""
    # Imported here: http.client/ssl cost ~100 ms that serve/check/dry-run must not pay.
    from vllm_secure_launch.gate.probe import probe, read_key_file, render_json, render_text

    key = read_key_file(api_key_file) if api_key_file else None
    report = probe(url, api_key=key, timeout=timeout, insecure=insecure, allow_open=allow_open)
    click.echo(render_json(report) if fmt == "json" else render_text(report))
    return ExitCode.AUDIT_FAILED if report.open_sensitive else ExitCode.OK
