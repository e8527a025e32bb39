"""python -m benchmarks [NAME...]: run the benchmarks and print one line per ratio."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import traceback

import benchmarks


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    names = [a for a in argv if not a.startswith("-")]
    mods = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                  if m.name not in ("common",) and not m.name.startswith("_"))
    rows = []
    for name in mods:
        if names and name not in names:
            continue
        try:
            rows += importlib.import_module(f"benchmarks.{name}").run()
        except Exception as exc:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            rows.append({"name": name, "ratio": None, "target": "", "ok": False,
                         "detail": f"failed: {exc}"})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            mark = "ok  " if r["ok"] else "MISS"
            print(f"{mark} {r['name']:<58} ratio {r['ratio']!s:<7} target {r['target']:<7} "
                  f"{r['detail']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
