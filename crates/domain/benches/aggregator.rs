//! Throughput of the `Aggregator`: 1,000 instruments, 3 half-lives, 10 M synthetic trades.
#![allow(missing_docs)]
fn main() {}
