# Task runner: `just` lists the recipes.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Run every test: no Docker, no network.
test:
    cargo test --workspace --locked

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
