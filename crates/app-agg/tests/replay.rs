//! `app-agg replay` end to end: against pandas-computed golden values, and with bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

use std::io::Write;
use std::process::{Command, Output};

use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/trades.jsonl");
/// Expected aggregates of `trades.jsonl` (1m windows, half-lives 30s and 5m), computed once with
/// pandas 3.1.1: `ewm(halflife=H, times=ts).mean()` with times as datetime64[ms], at each
/// window's last trade; VWAP and OHLC by plain groupby.
const PANDAS: &str = include_str!("data/trades.pandas.jsonl");

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_app-agg"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rel(a: &Value, b: &Value) -> f64 {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    ((a - b) / b).abs()
}

#[test]
fn replay_matches_pandas_ewm_on_a_multi_instrument_capture() {
    let out = replay(&[
        "--input",
        FIXTURE,
        "--window",
        "1m",
        "--halflife",
        "30s,5m",
        "--grace",
        "0s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = json_lines(&String::from_utf8(out.stdout).unwrap());
    let expected = json_lines(PANDAS);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got.len(), 634);
    for (g, e) in got.iter().zip(&expected) {
        for key in ["instrument_name", "window_start", "trade_count"] {
            assert_eq!(g[key], e[key], "{key} of {g}");
        }
        assert_eq!(
            g["window_end"].as_i64().unwrap(),
            e["window_start"].as_i64().unwrap() + 60_000
        );
        for key in ["volume", "vwap", "open", "high", "low", "close"] {
            assert!(
                rel(&g[key], &e[key]) < 1e-12,
                "{key}: {} vs {}",
                g[key],
                e[key]
            );
        }
        let (ge, ee) = (g["ewma"].as_array().unwrap(), e["ewma"].as_array().unwrap());
        assert_eq!(ge.len(), 2);
        for (gv, ev) in ge.iter().zip(ee) {
            assert_eq!(gv["halflife_ms"], ev["halflife_ms"]);
            assert!(rel(&gv["price"], &ev["price"]) < 1e-12, "{gv} vs {ev}");
            assert!(
                rel(&gv["vw_price"], &ev["vw_price"]) < 1e-12,
                "{gv} vs {ev}"
            );
        }
    }
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "replay: 1691 lines, 4000 trades aggregated, 0 duplicates, 0 late, 0 bad lines, \
         0 invalid trades, 634 aggregates written"
    );
}

#[test]
fn every_field_of_an_aggregate_is_written_with_its_wire_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let out = replay(&["--input", FIXTURE, "--output", output.to_str().unwrap()]);
    assert!(out.status.success());
    let first = &json_lines(&std::fs::read_to_string(&output).unwrap())[0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "buy_volume",
            "close",
            "ewma",
            "first_trade_seq",
            "first_trade_timestamp",
            "high",
            "instrument_name",
            "last_trade_seq",
            "last_trade_timestamp",
            "late_trades",
            "low",
            "open",
            "sell_volume",
            "seq_gaps",
            "trade_count",
            "volume",
            "vwap",
            "window_end",
            "window_ms",
            "window_start",
        ]
    );
    assert!(first["window_start"].is_i64() && first["first_trade_timestamp"].is_i64());
    let ewma_keys: Vec<&String> = first["ewma"][0].as_object().unwrap().keys().collect();
    assert_eq!(ewma_keys, ["halflife_ms", "price", "vw_price"]);
}

const GOOD: &str = r#"{"trade_seq":1,"trade_id":"1","timestamp":1732500000100,"tick_direction":0,"price":100,"mark_price":100,"instrument_name":"BTC-PERPETUAL","index_price":100,"direction":"buy","amount":2}"#;

#[test]
fn bad_lines_are_reported_by_number_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    let mut file = std::fs::File::create(&input).unwrap();
    let t = |seq: u64, ts: i64, price: &str| {
        GOOD.replace("\"trade_seq\":1", &format!("\"trade_seq\":{seq}"))
            .replace("1732500000100", &ts.to_string())
            .replace("\"price\":100,", &format!("\"price\":{price},"))
    };
    let lines: Vec<Vec<u8>> = vec![
        t(1, 1_732_500_000_100, "100").into_bytes(),                 // 1 ok
        b"{\"trade_seq\": 2, \"price\": ".to_vec(),                 // 2 truncated JSON
        GOOD.replace("\"amount\":2", "\"x\":2").replace("\"trade_seq\":1", "\"trade_seq\":3").into_bytes(), // 3 missing amount
        t(4, 1_732_500_000_200, "-5").into_bytes(),                  // 4 negative price
        t(5, 1_732_500_000_200, "NaN").into_bytes(),                 // 5 NaN is not JSON
        br#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms","data":{}}}"#.to_vec(), // 6
        br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#.to_vec(), // 7
        vec![0xff, 0xfe, b'{', b'}'],                                // 8 not UTF-8
        Vec::new(),                                                  // 9 blank: ignored silently
        t(1, 1_732_500_000_100, "100").into_bytes(),                 // 10 duplicate of line 1
        t(6, 1_732_500_120_000, "110").into_bytes(),                 // 11 closes the first window
        t(7, 1_732_500_000_300, "90").into_bytes(),                  // 12 late
        format!(
            r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"trades.future.BTC.100ms","data":[{},{}]}}}}"#,
            t(8, 1_732_500_120_001, "111"),
            t(9, 1_732_500_120_002, "0")
        )
        .into_bytes(), // 13: second element invalid, first kept
    ];
    for line in &lines {
        file.write_all(line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    drop(file);

    let out = replay(&["--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "bad lines must not fail the replay");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let report: Vec<&str> = stderr.lines().collect();
    let expect = [
        ("line 2: skipped: malformed frame", 0),
        ("line 3: trade 0 skipped: missing field `amount`", 1),
        (
            "line 4: trade 0 skipped: invalid trade \"BTC-PERPETUAL\" seq 4: field `price` must be finite, > 0 and ≤ 1e12, got -5",
            2,
        ),
        ("line 5: skipped: malformed frame", 3),
        (
            "line 6: skipped: not a trades notification (channel \"book.BTC-PERPETUAL.100ms\")",
            4,
        ),
        (
            "line 7: skipped: unexpected message (method \"heartbeat\")",
            5,
        ),
        ("line 8: skipped: not valid UTF-8", 6),
        (
            "line 10: duplicate skipped: BTC-PERPETUAL trade_seq 1 already seen",
            7,
        ),
        (
            "line 12: late trade skipped: BTC-PERPETUAL trade_seq 7 at 1732500000300 (window starting 1732500000000 closed",
            8,
        ),
        (
            "line 13: trade 1 skipped: invalid trade \"BTC-PERPETUAL\" seq 9: field `price`",
            9,
        ),
    ];
    for (prefix, at) in expect {
        assert!(
            report[at].starts_with(prefix),
            "expected {prefix:?}, got {:?}",
            report[at]
        );
    }
    assert_eq!(
        report[10],
        "replay: 13 lines, 3 trades aggregated, 1 duplicates, 1 late, 5 bad lines, \
         3 invalid trades, 2 aggregates written"
    );
    assert_eq!(report.len(), 11);

    let aggregates = json_lines(&String::from_utf8(out.stdout).unwrap());
    let summary: Vec<(i64, u64, f64)> = aggregates
        .iter()
        .map(|a| {
            (
                a["window_start"].as_i64().unwrap(),
                a["trade_count"].as_u64().unwrap(),
                a["close"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(1_732_500_000_000, 1, 100.0), (1_732_500_120_000, 2, 111.0)]
    );
}

#[test]
fn unreadable_input_fails_with_the_path_in_the_message() {
    let out = replay(&["--input", "/nonexistent/trades.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("opening input /nonexistent/trades.jsonl"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_name_the_value_and_the_accepted_form() {
    let out = replay(&["--input", FIXTURE, "--window", "ten"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("'ten'") && stderr.contains("30s"),
        "{stderr}"
    );
    let out = replay(&["--input", FIXTURE, "--window", "0s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("window size must be > 0 ms")
    );
    let out = replay(&["--input", FIXTURE, "--halflife", "30s,30s"]);
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("listed twice")
    );
    let out = replay(&["--input", FIXTURE, "--window", "1m,90s"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--window") && stderr.contains("not a multiple of the smallest window"),
        "{stderr}"
    );
}

#[test]
fn several_bar_sizes_come_out_of_one_replay_like_one_replay_per_size() {
    let lines = |window: &str| {
        let out = replay(&["--input", FIXTURE, "--window", window]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&String::from_utf8(out.stdout).unwrap())
    };
    let all = lines("5m,1m,2m");
    for (window, ms) in [("1m", 60_000), ("2m", 120_000), ("5m", 300_000)] {
        let of_size: Vec<&Value> = all.iter().filter(|a| a["window_ms"] == ms).collect();
        let alone = lines(window);
        assert!(!alone.is_empty());
        // The larger sizes are rolled up from the 1m bars, and equal bars built directly.
        assert_eq!(of_size, alone.iter().collect::<Vec<_>>(), "{window} bars");
    }
    assert_eq!(
        all.len(),
        ["1m", "2m", "5m"]
            .iter()
            .map(|w| lines(w).len())
            .sum::<usize>()
    );
}

#[test]
fn reads_stdin_when_input_is_a_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_app-agg"))
        .args(["replay", "--input", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{GOOD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&String::from_utf8(out.stdout).unwrap()).len(), 1);
}
