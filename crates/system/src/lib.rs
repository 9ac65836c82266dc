//! The whole system: both services and every stand-in together. Dev-only, never a dependency
//! of a binary; this library is empty, the crate is its tests and its example.
//!
//! * `tests/`: what only the whole system can show. FakeDeribit → app-raw → broker → app-agg
//!   equals `replay` (`pipeline`, `completeness`); both services over SASL_SSL (`sasl_ssl`);
//!   app-agg's spans linked to the traces app-raw started (`tracing`); compose, the
//!   Dockerfile, Prometheus and the dashboard agree with the code (`deploy`); checks against a
//!   running `just up` stack, ignored unless `just e2e` asks (`e2e_stack`).
//! * `examples/demo/`: `just demo` (and `just stack`), the pipeline on one machine without
//!   Docker or internet, aggregates shown as they arrive.
//!
//! The tests and the demo run the services' binaries, which cargo builds only for their own
//! package's tests: `testkit::services` builds both (`cargo build -p app-raw -p app-agg --bins`,
//! once per process, with the profile of the running executable) and takes their paths from
//! cargo, so `cargo test -p system` on a clean checkout never runs a missing or stale binary.
