//! Parse + validate + map of Deribit trade notifications, as the feed does per frame.
//!
//! Frames are shaped like captured ones: `trades.option.BTC.100ms` batches of 1, 10 and 50
//! trades mixing futures and options (with `iv`, `contracts`, a string `combo_trade_id`).
//! Criterion reports `thrpt` in trades per second. `notification` is the text entry point
//! (replay lines); `live` is the session's path, the frame read once by `rpc::classify` and its
//! `params` handed on; `live_read_twice` is that path as it was before, the frame classified and
//! then parsed again whole, as the reference.
#![allow(missing_docs, clippy::unwrap_used)]

use adapters_deribit::parse::parse_notification_params;
use adapters_deribit::parse_notification;
use adapters_deribit::rpc::{Incoming, classify};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn notification(trades: usize) -> String {
    let data: Vec<String> = (0..trades)
        .map(|i| {
            if i % 2 == 0 {
                format!(
                    r#"{{"trade_seq":{},"trade_id":"{}","timestamp":1770984454552,"tick_direction":2,"price":67012.5,"mark_price":67010.33,"instrument_name":"BTC-PERPETUAL","index_price":66990.31,"direction":"buy","amount":{},"contracts":{}}}"#,
                    271_252_854 + i,
                    415_305_279 + i,
                    10 * (i + 1),
                    i + 1
                )
            } else {
                format!(
                    r#"{{"trade_seq":{},"trade_id":"{}","timestamp":1770984454552,"tick_direction":1,"price":0.0525,"mark_price":0.05253883,"iv":45.91,"instrument_name":"BTC-24APR26-72000-C","index_price":66930.31,"direction":"sell","amount":3,"contracts":3,"combo_trade_id":"43"}}"#,
                    467 + i,
                    415_305_279 + i
                )
            }
        })
        .collect();
    format!(
        r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"trades.option.BTC.100ms","data":[{}]}}}}"#,
        data.join(",")
    )
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("deribit_parse");
    for trades in [1usize, 10, 50] {
        let frame = notification(trades);
        assert_eq!(parse_notification(&frame).unwrap().trades.len(), trades);
        group.throughput(Throughput::Elements(trades as u64));
        group.bench_with_input(
            BenchmarkId::new("notification", trades),
            &frame,
            |b, frame| {
                b.iter(|| parse_notification(std::hint::black_box(frame)).unwrap());
            },
        );
    }
    group.finish();
}

fn live(frame: &str) -> usize {
    match classify(frame).unwrap() {
        Incoming::Notification(params) => parse_notification_params(params).unwrap().trades.len(),
        _ => 0,
    }
}

fn live_read_twice(frame: &str) -> usize {
    match classify(frame).unwrap() {
        Incoming::Notification(_) => parse_notification(frame).unwrap().trades.len(),
        _ => 0,
    }
}

fn live_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("deribit_live_frame");
    for trades in [1usize, 10, 50] {
        let frame = notification(trades);
        assert_eq!(live(&frame), trades);
        assert_eq!(live_read_twice(&frame), trades);
        group.throughput(Throughput::Elements(trades as u64));
        group.bench_with_input(BenchmarkId::new("live", trades), &frame, |b, frame| {
            b.iter(|| live(std::hint::black_box(frame)));
        });
        group.bench_with_input(
            BenchmarkId::new("live_read_twice", trades),
            &frame,
            |b, frame| {
                b.iter(|| live_read_twice(std::hint::black_box(frame)));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse, live_path);
criterion_main!(benches);
