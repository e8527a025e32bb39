"""The `vllm-secure-launch` console script (pyproject [project.scripts]): pauses the cyclic
garbage collector before click and the launcher load, and spares the exit its final pass
(startup.py says why), then runs the command group."""

from __future__ import annotations

from vllm_secure_launch import startup

startup.pause()


def main() -> None:
    from vllm_secure_launch.cli.main import main as run

    try:
        run()
    finally:
        startup.before_exit()


if __name__ == "__main__":  # `python -m vllm_secure_launch.cli.console`, as the script runs
    main()
