//! `app-raw history` as a process against the fake Deribit: a full fetch is the fake's record
//! in the range (expired instruments included, holes in the time index closed, more than a
//! page of trades on one timestamp, the range's first and last trades missing from the time
//! index), per instrument in `trade_seq` order; a run killed mid-way, its output left with a
//! half-written line, and resumed writes the same bytes as one that was not; 10028 and a
//! dropped connection are waited out and retried, a fatal error ends in one line; a fresh run
//! does not overwrite a non-empty file without `--force`, nor write the live raw topic; bad
//! arguments are exit code 2.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use app_raw::history::args::format_utc;
use app_raw::history::progress::Progress;
use serde_json::Value;
use testkit::deribit::CallFault;
use testkit::process::now_ms;
use testkit::{FakeDeribit, FakeInstrument};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_app-raw");
const CHANNELS: &str = "trades.future.BTC.100ms,trades.ETH-PERPETUAL.100ms";
const BY_TIME: &str = "public/get_last_trades_by_instrument_and_time";

fn market() -> Vec<FakeInstrument> {
    vec![
        FakeInstrument::new("BTC-PERPETUAL", "future", "BTC", 97_000.0),
        FakeInstrument::new("BTC-25DEC26", "future", "BTC", 98_000.0),
        FakeInstrument::new("BTC-25DEC26-100000-C", "option", "BTC", 0.05),
        FakeInstrument::new("ETH-PERPETUAL", "future", "ETH", 3_400.0),
        FakeInstrument::new("ETH-26JUN26", "future", "ETH", 3_500.0),
    ]
}

/// A market with trades before, in and after a range; returns the range.
async fn trade(fake: &FakeDeribit, bursts: usize, size: usize) -> (i64, i64) {
    fake.trade_all(3);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut first = i64::MAX;
    let mut last = 0;
    for burst in 0..bursts {
        for instrument in market() {
            // One burst carries more than a page of trades on one timestamp.
            let n = if burst == 1 && instrument.name == "BTC-PERPETUAL" {
                2_500
            } else {
                size
            };
            for t in fake.trade(&instrument.name, n) {
                let ts = t["timestamp"].as_i64().unwrap();
                first = first.min(ts);
                last = last.max(ts);
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    fake.trade_all(3);
    (first, last + 1)
}

/// What the file must hold: the record of the matching instruments in the range, instrument
/// by instrument (sorted by name), in `trade_seq` order.
fn expected(fake: &FakeDeribit, names: &[&str], from: i64, to: i64) -> Vec<Value> {
    let mut names = names.to_vec();
    names.sort_unstable();
    names
        .iter()
        .flat_map(|name| fake.record(name))
        .filter(|t| (from..to).contains(&t["timestamp"].as_i64().unwrap()))
        .collect()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn command(fake: &FakeDeribit, from: i64, to: i64, output: &Path) -> Command {
    let (from, to) = (format_utc(from), format_utc(to));
    let mut command = Command::from(testkit::services::history_command(
        BINARY,
        &fake.url(),
        &from,
        &to,
        CHANNELS,
    ));
    command.arg("--output").arg(output).kill_on_drop(true);
    command
}

async fn run(fake: &FakeDeribit, from: i64, to: i64, output: &Path) -> Output {
    let out = command(fake, from, to, output).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "history failed: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const MATCHED: [&str; 3] = ["BTC-PERPETUAL", "BTC-25DEC26", "ETH-PERPETUAL"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_fetch_is_the_record_in_the_range_per_instrument_in_order() {
    let fake = FakeDeribit::start(market()).await.unwrap();
    let (from, to) = trade(&fake, 4, 30).await;
    fake.expire("BTC-25DEC26");
    fake.hide_from_time_index("BTC-PERPETUAL", 1_200);
    fake.hide_from_time_index("ETH-PERPETUAL", 50);
    // The range's first and last trades missing from the time index: no trade seen before or
    // after them reveals the gap.
    for name in ["BTC-PERPETUAL", "ETH-PERPETUAL"] {
        let seqs: Vec<u64> = expected(&fake, &[name], from, to)
            .iter()
            .map(|t| t["trade_seq"].as_u64().unwrap())
            .collect();
        for seq in [seqs[0], seqs[1], seqs[seqs.len() - 1]] {
            fake.hide_from_time_index(name, seq);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    let out = run(&fake, from, to, &file).await;

    let got = lines(&file);
    let want = expected(&fake, &MATCHED, from, to);
    assert_eq!(got.len(), want.len(), "{}", stderr(&out));
    assert_eq!(
        got, want,
        "the record in the range, instrument by instrument, in trade_seq order"
    );
    assert!(
        got.iter().any(|t| t["instrument_name"] == "BTC-25DEC26"),
        "the instrument that expired is in"
    );
    let (by_seq, listings) = (
        fake.calls("public/get_last_trades_by_instrument"),
        fake.calls("public/get_instruments"),
    );
    assert!(
        by_seq >= 2,
        "holes closed and the crowded timestamp passed by sequence"
    );
    assert_eq!(listings, 2, "active and expired instruments listed");
    let summary = stderr(&out);
    assert!(summary.contains("done: 3 instruments"), "{summary}");
    assert!(summary.contains("0 skipped, 0 missing"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_way_and_resumed_writes_the_same_bytes() {
    let fake = FakeDeribit::start(market()).await.unwrap();
    let (from, to) = trade(&fake, 6, 400).await;
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.jsonl");
    run(&fake, from, to, &whole).await;
    let whole_bytes = std::fs::read(&whole).unwrap();

    // Slow answers, so the kill lands mid-way.
    fake.delay_history(Some(Duration::from_millis(25)));
    let resumed = dir.path().join("resumed.jsonl");
    let progress_path = dir.path().join("resumed.jsonl.progress");
    let mut child = command(&fake, from, to, &resumed)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        let progress = Progress::load(&progress_path).ok().flatten();
        if let Some(progress) = progress.filter(|p| p.trades > 1_000) {
            child.kill().await.unwrap();
            break progress;
        }
        assert!(Instant::now() < deadline, "no progress within 30 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(!at_kill.complete(), "killed mid-way: {at_kill:?}");
    let cut = std::fs::read(&resumed).unwrap();
    assert!(cut.len() < whole_bytes.len());
    assert_eq!(
        cut[..],
        whole_bytes[..cut.len()],
        "what was written so far is a prefix"
    );

    // A page half-written when the process died: bytes past what the progress file records.
    // (The kill may land right after a save, when the output is exactly the recorded length;
    // these make the resume's cut always needed.)
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&resumed)
        .unwrap();
    std::io::Write::write_all(&mut file, b"{\"amount\":1,\"direction\":\"bu").unwrap();
    drop(file);
    assert!(std::fs::metadata(&resumed).unwrap().len() > at_kill.output_bytes);

    fake.delay_history(None);
    let out = run(&fake, from, to, &resumed).await;
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let again = std::fs::read(&resumed).unwrap();
    assert!(
        again == whole_bytes,
        "byte-identical after the resume ({} vs {} bytes)",
        again.len(),
        whole_bytes.len()
    );
    let progress = Progress::load(&progress_path).unwrap().unwrap();
    assert!(progress.complete());
    assert_eq!(progress.output_bytes, whole_bytes.len() as u64);

    // A rerun of a complete run changes nothing.
    run(&fake, from, to, &resumed).await;
    assert!(std::fs::read(&resumed).unwrap() == whole_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_dropped_connections_are_retried_and_fatal_errors_end_in_one_line() {
    let fake = FakeDeribit::start(market()).await.unwrap();
    let (from, to) = trade(&fake, 2, 20).await;
    // Deribit answers 10028 and ends the session; later a connection drops unanswered.
    fake.fault_on_call(BY_TIME, 2, CallFault::too_many_requests());
    fake.fault_on_call(BY_TIME, 4, CallFault::Close);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retried.jsonl");
    let started = Instant::now();
    let out = run(&fake, from, to, &file).await;
    assert_eq!(
        lines(&file),
        expected(&fake, &MATCHED, from, to),
        "nothing lost or repeated"
    );
    let summary = stderr(&out);
    assert!(summary.contains("1 rate-limited, 2 retried"), "{summary}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "waited for the credits to refill"
    );
    assert!(
        fake.connections_total() >= 3,
        "reconnected after each closed session"
    );

    // An error retrying cannot help: exit 1, one line on stderr saying what.
    fake.fault_on_call(
        BY_TIME,
        1,
        CallFault::Error {
            code: 11050,
            message: "bad_request".into(),
        },
    );
    let failed = command(&fake, from, to, &dir.path().join("failed.jsonl"))
        .output()
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let text = stderr(&failed);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("bad_request (11050)"), "{text}");
}

/// The fake answers a request without `"sorting":"asc"` newest first (Deribit's default is its
/// database order): a client that dropped it would still recover every trade by sequence, but
/// not with the edge checks alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_time_index_is_read_oldest_first_with_only_the_edge_checks_by_sequence() {
    let fake = FakeDeribit::start(vec![FakeInstrument::new(
        "ETH-PERPETUAL",
        "future",
        "ETH",
        3_400.0,
    )])
    .await
    .unwrap();
    fake.trade("ETH-PERPETUAL", 3);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let from = now_ms();
    for _ in 0..3 {
        fake.trade("ETH-PERPETUAL", 700);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let to = now_ms() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    fake.trade("ETH-PERPETUAL", 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eth.jsonl");
    run(&fake, from, to, &file).await;
    assert_eq!(lines(&file), expected(&fake, &["ETH-PERPETUAL"], from, to));
    assert_eq!(
        fake.calls("public/get_last_trades_by_instrument"),
        2,
        "a look back before the first trade and one on after the last: no hole to fill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_run_refuses_to_overwrite_a_non_empty_output_unless_forced() {
    let fake = FakeDeribit::start(market()).await.unwrap();
    let (from, to) = trade(&fake, 2, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kept.jsonl");
    std::fs::write(&file, "a week of trades\n").unwrap();
    let refused = command(&fake, from, to, &file).output().await.unwrap();
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(
        text.contains("--force") && text.contains("delete"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "a week of trades\n"
    );
    assert_eq!(fake.calls(BY_TIME), 0, "refused before asking Deribit");

    // An empty file is nothing to lose; --force overwrites a full one.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    run(&fake, from, to, &empty).await;
    let forced = command(&fake, from, to, &file)
        .arg("--force")
        .output()
        .await
        .unwrap();
    assert!(forced.status.success(), "{}", stderr(&forced));
    let want = expected(&fake, &MATCHED, from, to);
    assert_eq!(lines(&file), want);
    assert_eq!(lines(&empty), want);
}

#[tokio::test]
async fn the_live_raw_topic_is_refused_as_a_history_topic() {
    for (raw_topic, topic) in [(None, "deribit.trades"), (Some("live.raw"), "live.raw")] {
        let mut command = Command::new(BINARY);
        command.env_clear().envs([
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
            ("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9"),
            ("DERIBIT_URL", "ws://127.0.0.1:9/ws/api/v2"),
        ]);
        if let Some(raw_topic) = raw_topic {
            command.env("RAW_TOPIC", raw_topic);
        }
        let out = command
            .args(["history", "--from", "2026-11-01", "--to", "2026-11-02"])
            .args(["--channels", "trades.future.BTC.100ms", "--topic", topic])
            .output()
            .await
            .unwrap();
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{topic}: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("RAW_TOPIC") && text.contains(topic), "{text}");
    }
}

#[tokio::test]
async fn bad_arguments_are_one_line_and_exit_code_2() {
    for args in [
        vec!["--from", "2026-11-02T00:00Z", "--to", "2026-11-01T00:00Z"],
        vec!["--from", "2026-11-01T00:00Z", "--to", "2026-11-01T00:00Z"],
        vec!["--from", "2026-11-31", "--to", "2026-12-01"],
        vec![
            "--from",
            "2026-11-01T00:00Z",
            "--to",
            "2026-11-02T00:00Z",
            "--channels",
            "trades.nope",
        ],
        vec![
            "--from",
            "2026-11-01T00:00Z",
            "--to",
            "2026-11-02T00:00Z",
            "--frobnicate",
        ],
    ] {
        let mut full = vec!["history"];
        full.extend(&args);
        if !args.contains(&"--channels") {
            full.extend(["--channels", "trades.future.BTC.100ms"]);
        }
        full.extend(["--output", "/nonexistent/never-written.jsonl"]);
        let out = Command::new(BINARY)
            .env_clear()
            .args(&full)
            .output()
            .await
            .unwrap();
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.starts_with("app-raw history: "), "{text}");
    }
}

/// The figures: trades/s and requests per 10k trades, on a market of bursts (500 trades of
/// an instrument on one timestamp, the worst case for paging by time) and on one where each
/// timestamp carries 1 to 4 trades (as Deribit's busiest instruments mostly do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test -p app-raw --test history measure -- --ignored --nocapture"]
async fn measure_trades_per_second_and_requests_per_10k_trades() {
    let dir = tempfile::tempdir().unwrap();
    let bursts = FakeDeribit::start(market()).await.unwrap();
    let (from, to) = trade(&bursts, 60, 500).await;
    let spread = FakeDeribit::start(market()).await.unwrap();
    let first = now_ms();
    let mut n = 0;
    // The fake stamps trades with its clock: moving it 1 ms per call spreads them out.
    for step in 0..40_000_i64 {
        spread.shift_clock(step);
        let instrument = &MATCHED[usize::try_from(step).unwrap() % MATCHED.len()];
        n += spread
            .trade(instrument, 1 + usize::try_from(step % 4).unwrap())
            .len();
    }
    let last = now_ms() + 40_000;
    for (name, fake, from, to) in [
        ("bursts", &bursts, from, to),
        ("spread", &spread, first, last + 1),
    ] {
        let file = dir.path().join(format!("{name}.jsonl"));
        let out = run(fake, from, to, &file).await;
        let want = expected(fake, &MATCHED, from, to);
        assert_eq!(lines(&file).len(), want.len());
        eprintln!(
            "{name}: {} trades in the range; {}",
            want.len(),
            stderr(&out).lines().last().unwrap()
        );
    }
    assert!(n > 90_000);
}
