# Task runner: `just` lists the recipes.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Every test, no Docker or network; Kafka suites run on the mock cluster, then on Tansu.
test:
    cargo test --workspace --locked
    TEST_BROKER=tansu cargo test --locked -p adapters-kafka -p app-raw -p app-agg

# Install Tansu for the real-broker tests unless present (~9 min once; looked up like testkit).
tansu:
    #!/usr/bin/env bash
    set -euo pipefail
    for candidate in "${TANSU_BIN:-}" "$HOME/.tansu/bin/tansu" "$HOME/.cargo/bin/tansu" "$(command -v tansu || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "tansu: $candidate"; exit 0; fi
    done
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$HOME/.tansu"

# Formatting and clippy, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Benchmarks (heavy: minutes). Throughput is printed as elem/s = trades per second.
bench:
    cargo bench -p domain --bench aggregator
    cargo bench -p adapters-deribit --bench parse
    cargo bench -p adapters-kafka --bench encode
    cargo bench -p adapters-kafka --bench sink

# Recompute aggregates from captured Deribit trades, e.g. `just replay --input trades.jsonl`.
replay *ARGS:
    cargo run --release --quiet -p app-agg -- replay {{ARGS}}
