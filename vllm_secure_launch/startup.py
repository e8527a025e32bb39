"""The cyclic garbage collector, paused while the launcher starts (issue 9).

Starting allocates tens of thousands of objects that live until the process exits (modules,
click's and the launcher's option tables, the vLLM flag and route tables) and makes almost no
cyclic garbage, so the collector's passes over them are pure cost: ~13 % of a dry run's
instructions, and the interpreter's final pass at exit another ~8 %. The console script
(cli/console.py) pauses it before anything is imported and freezes what is left before the
process exits (the OS reclaims it; the interpreter still flushes and closes standard streams);
a long-running phase (the supervisor of `serve` and `ray start`) resumes it, after
`gc.freeze()` has moved everything made so far out of its sight. Code that imports the package
any other way (tests, vLLM's processes loading the gate or the guard) never pauses it.
"""

from __future__ import annotations

import gc


def pause() -> None:
    gc.disable()


def resume() -> None:
    """Collect again from here on (idempotent; a no-op where nothing paused collection)."""
    if not gc.isenabled():
        gc.freeze()  # what starting made stays: no pass need look at it again
        gc.enable()


def before_exit() -> None:
    """After a short command (collection still paused), leave what is alive to the OS: the
    interpreter's last collection skips the frozen generation, and what remains is freed by
    refcounting as modules are cleared. After a long run (collection resumed) the exit is the
    interpreter's usual one."""
    if not gc.isenabled():
        gc.freeze()
