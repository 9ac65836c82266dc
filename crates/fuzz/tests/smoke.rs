//! CI's time box: every fuzz target runs for a few seconds and finds nothing. `just fuzz` runs
//! them for minutes.
#![allow(clippy::unwrap_used)] // test helpers

use std::time::Duration;

use fuzz::Target;

/// Seconds per target (`FUZZ_SMOKE_SECS` overrides).
fn budget() -> Duration {
    let seconds = std::env::var("FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    Duration::from_secs(seconds)
}

#[test]
fn every_target_runs_clean_for_a_time_box() {
    let out = tempfile::tempdir().unwrap();
    for target in Target::ALL {
        let report = fuzz::run(target, budget(), 0x5eed, out.path()).unwrap();
        eprintln!(
            "{}: {} inputs, {} signatures",
            target.name(),
            report.inputs,
            report.signatures
        );
        assert!(
            report.inputs > 10,
            "{}: only {} inputs ran",
            target.name(),
            report.inputs
        );
        assert!(
            report.signatures > 1,
            "{}: every input did the same thing",
            target.name()
        );
        let found: Vec<String> = report
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{} ({} bytes)",
                    f.display(),
                    std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)
                )
            })
            .collect();
        assert!(found.is_empty(), "{}: findings {found:?}", target.name());
    }
}
