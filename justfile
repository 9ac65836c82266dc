# Task runner: `just` lists the recipes.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Every test, no Docker or network: the fast suite (Kafka tests on librdkafka's mock cluster),
# then the integration tests again on Apache Kafka (fetched once by `just kafka`), the tracing
# test with a real Jaeger too (built once by `just jaeger`, which waits for a build already
# under way: CI starts one beside the suites).
test: kafka
    cargo test --workspace --locked
    TEST_BROKER=kafka cargo test --locked -p adapters-kafka -p app-raw -p app-agg -p app-sql -p system --test '*' -- --skip app_agg_commit_spans_link_to_the_traces_app_raw_started
    just jaeger
    TEST_BROKER=kafka TEST_TRACES=jaeger cargo test --locked -p system --test tracing

# Fetch the Apache Kafka broker (tools/kafka/pom.xml) with Maven into a cache outside the repo,
# once (~10 s); later runs are offline and instant. Needs Java 17+ and Maven.
kafka:
    #!/usr/bin/env bash
    set -euo pipefail
    version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)
    libs="${KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/deribit-pipeline/kafka-$version/libs}"
    if [ -f "$libs/kafka_2.13-$version.jar" ]; then echo "kafka $version: $libs"; exit 0; fi
    for tool in java mvn; do
        command -v "$tool" >/dev/null || { echo "kafka: $tool not found; install a Java 17+ JDK and Maven (README, Prerequisites)" >&2; exit 1; }
    done
    rm -rf "$libs.partial"
    mvn --batch-mode --quiet -Dstyle.color=never -f tools/kafka/pom.xml dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$libs.partial"
    rm -rf "$libs" && mv "$libs.partial" "$libs"
    echo "kafka $version: $libs"

# Build Jaeger v2 (the version tools/jaeger/go.mod pins) from the Go module proxy into a cache
# outside the repo, once (~8 min on 2 cores); later runs are instant. Needs Go 1.26+.
jaeger:
    #!/usr/bin/env bash
    set -euo pipefail
    version=$(sed -n 's:^[[:space:]]*github.com/jaegertracing/jaeger \(v[^ ]*\).*:\1:p' tools/jaeger/go.mod)
    bin="${JAEGER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/deribit-pipeline/jaeger-$version/jaeger}"
    if [ -x "$bin" ]; then echo "jaeger $version: $bin"; exit 0; fi
    command -v go >/dev/null || { echo "jaeger: go not found; install Go 1.26+ (README, Prerequisites)" >&2; exit 1; }
    mkdir -p "$(dirname "$bin")"
    # One build at a time: a second caller waits for the first and takes its binary.
    exec 9>"$bin.lock"
    flock 9
    if [ -x "$bin" ]; then echo "jaeger $version: $bin"; exit 0; fi
    (cd tools/jaeger && go build -o "$bin.partial" github.com/jaegertracing/jaeger/cmd/jaeger)
    mv "$bin.partial" "$bin"
    echo "jaeger $version: $bin"

# Formatting and clippy, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Benchmarks (heavy: minutes). Throughput is printed as elem/s = trades per second; the Kafka
# benches run on Apache Kafka and print the bare-rdkafka reference beside their figure.
bench: kafka
    cargo bench -p domain --bench aggregator
    cargo bench -p adapters-deribit --bench parse
    cargo bench -p adapters-kafka --bench encode
    TEST_BROKER=kafka cargo bench -p adapters-kafka --bench sink
    TEST_BROKER=kafka cargo bench -p app-raw --bench pipeline
    TEST_BROKER=kafka cargo bench -p app-agg --bench service
    TEST_BROKER=kafka cargo bench -p app-sql --bench store

# Fuzz every parser of external data (Deribit frames and history pages, replay files, Kafka
# record values, the environment) for SECS seconds per target; findings go to target/fuzz-findings/.
# Then parsing one 16 MiB frame is measured against its 4× memory bound. `just test` runs 4 s
# per target.
fuzz secs="600" *targets="all":
    #!/usr/bin/env bash
    set -uo pipefail
    cargo build --locked --profile fuzz -p fuzz || exit 1
    ./target/fuzz/fuzz --seconds {{secs}} {{targets}}
    status=$?
    if [ "$status" -gt 1 ]; then
        echo "fuzz: the run ended abnormally (exit $status); the input under test is kept:" >&2
        ls target/fuzz-findings/*/current >&2 2>/dev/null
        exit "$status"
    fi
    FUZZ_FRAME_BYTES=16777216 cargo test --locked --profile fuzz -p fuzz --test max_frame -- --nocapture 2>&1 | grep -E "peak|test result" || exit 1
    exit "$status"

# Long runs (heavy: ~12 min): the completeness suite on Apache Kafka with a 5-minute quiet
# instrument and app-raw stopped for 2 minutes (`just test` runs 15 s of each).
soak: kafka
    TEST_BROKER=kafka COMPLETENESS_QUIET_SECS=300 COMPLETENESS_STOP_SECS=120 \
        cargo test --locked -p system --test completeness -- --nocapture

# Build and start Kafka, Schema Registry, Jaeger, PostgreSQL and the three services;
# `--profile monitoring` adds Grafana.
up *ARGS:
    docker compose -f docker/compose.yaml {{ARGS}} up --build --detach --wait
    @echo "Jaeger UI        http://localhost:16686"
    @echo "Schema Registry  http://localhost:8081/subjects"
    @echo "Kafka            localhost:9092"
    @echo "app-raw          http://localhost:8080/metrics  (/readyz, /healthz)"
    @echo "app-agg          http://localhost:8091/metrics  (/readyz, /healthz)"
    @echo "app-sql          http://localhost:8092/metrics  (/readyz, /healthz)"
    @echo "PostgreSQL       psql postgresql://deribit:deribit@localhost:5432/deribit"
    @echo "Grafana          http://localhost:3000  (with --profile monitoring; Prometheus on :9090)"

# Stop the stack; `just down --volumes` also drops Kafka's and PostgreSQL's data.
down *ARGS:
    docker compose -f docker/compose.yaml --profile monitoring down --remove-orphans {{ARGS}}

# Follow the stack's logs, e.g. `just logs app-agg`.
logs *ARGS:
    docker compose -f docker/compose.yaml --profile monitoring logs --follow {{ARGS}}

# The stack's containers and their health.
ps:
    docker compose -f docker/compose.yaml --profile monitoring ps

# End-to-end checks against a running `just up` stack (needs Docker and internet).
e2e:
    cargo test --locked -p system --test e2e_stack -- --ignored --test-threads 1

# No Docker or internet: stand-ins, simulated market, both services, live table; `--live` for real
# Deribit, `--help` for the rest. The demo has cargo build both services first (release).
demo *ARGS:
    cargo run --release --locked --quiet -p system --example demo -- {{ARGS}}

# Only the stand-ins (broker, registry, simulated Deribit); prints the `export` lines for them.
stack:
    cargo run --release --locked --quiet -p system --example demo -- --stack

# A throwaway PostgreSQL (Debian's binaries, run as a non-root user, fsync off); prints the `export DATABASE_URL=…` line for it. Ctrl-C stops it.
postgres:
    cargo run --locked --quiet -p testkit --example postgres

# Recompute aggregates from captured Deribit trades, e.g. `just replay --input trades.jsonl`;
# paths are relative to where you run it, not to the repository.
[no-cd]
replay *ARGS:
    cargo run --release --locked --quiet --manifest-path "{{justfile_directory()}}/Cargo.toml" -p app-agg -- replay {{ARGS}}
