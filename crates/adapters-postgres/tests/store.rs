//! The store against a real PostgreSQL (Debian's, started by testkit): rows land once, field for
//! field; positions move only from what this instance expects (fenced otherwise, nothing kept);
//! a write whose commit answer was lost is not written twice; migrations refuse a database
//! ahead of the binary or a table changed by hand.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)] // test code

use std::time::Duration;

use adapters_postgres::migrate::migrate;
use adapters_postgres::read;
use adapters_postgres::{DatabaseUrl, PgStore, StoreConfig};
use domain::testing::{fields, validated};
use domain::{Aggregate, Direction, EwmaValue, Liquidation};
use ports::{Clock, PositionMove, Store, StoreBatch, StoreError, TopicPartition};
use testkit::TestPostgres;

#[derive(Clone, Copy)]
struct FixedClock(i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

/// 2026-12-07T10:00:00Z.
const NOW: i64 = 1_796_637_600_000;

fn config(db: &TestPostgres, writer: &str) -> StoreConfig {
    StoreConfig {
        url: db.url().parse::<DatabaseUrl>().unwrap(),
        schema: "public".into(),
        group: "app-sql".into(),
        writer: writer.into(),
        retention: None,
    }
}

async fn migrated(db: &TestPostgres) {
    let url: DatabaseUrl = db.url().parse().unwrap();
    let mut client = adapters_postgres::connect::connect(&url, "test", "public")
        .await
        .unwrap();
    migrate(&mut client).await.unwrap();
}

fn bar(instrument: &str, start: i64, v1: bool) -> Aggregate {
    Aggregate {
        instrument_name: instrument.into(),
        window_start: start,
        window_end: start + 60_000,
        window_ms: 60_000,
        trade_count: 3,
        volume: 30.0,
        buy_volume: 20.0,
        sell_volume: 10.0,
        vwap: 100.5,
        open: 100.0,
        high: 101.25,
        low: 99.5,
        close: 101.0,
        ewma: vec![
            EwmaValue {
                halflife_ms: 30_000,
                price: 100.75,
                vw_price: 100.625,
            },
            EwmaValue {
                halflife_ms: 300_000,
                price: 100.1,
                vw_price: 100.2,
            },
        ],
        first_trade_seq: 7,
        last_trade_seq: 9,
        first_trade_timestamp: start + 5,
        last_trade_timestamp: start + 59_000,
        seq_gaps: (!v1).then_some(1),
        late_trades: (!v1).then_some(0),
    }
}

fn moved(topic: &str, partition: i32, from: Option<i64>, to: i64) -> PositionMove {
    PositionMove {
        source: TopicPartition::new(topic, partition),
        from,
        to,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_once_with_every_field_and_positions_move_with_them() {
    let db = TestPostgres::start().unwrap();
    migrated(&db).await;
    let mut store = PgStore::new(config(&db, "a"), FixedClock(NOW));
    let mut option = fields("BTC-27DEC26-100000-C", 42, NOW - 1_000, 0.0315, 1.5);
    option.direction = Direction::Sell;
    option.iv = Some(55.5);
    option.liquidation = Some(Liquidation::Both);
    option.block_trade_id = Some("B1".into());
    option.combo_id = Some("C1".into());
    option.contracts = Some(15.0);
    option.tick_direction = 3;
    let trades = vec![
        validated(option),
        validated(fields(
            "BTC-PERPETUAL",
            7,
            NOW - 2 * 86_400_000,
            98_000.5,
            10.0,
        )),
    ];
    let batch = StoreBatch {
        trades: trades.clone(),
        bars: vec![
            bar("BTC-PERPETUAL", NOW - 60_000, false),
            bar("ETH-PERPETUAL", NOW - 60_000, true),
        ],
        positions: vec![moved("raw", 0, None, 11), moved("agg", 1, None, 5)],
        links: Vec::new(),
    };
    let written = store.write(&batch).await.unwrap();
    assert_eq!((written.trades, written.bars), (2, 2));
    assert_eq!((written.trade_conflicts, written.bar_conflicts), (0, 0));

    let option_row = db
        .psql(
            "SELECT instrument_name, trade_id, trade_seq, (extract(epoch from \"timestamp\")*1000)::bigint, price, amount, direction, index_price, mark_price, tick_direction, iv, liquidation, block_trade_id, combo_id, contracts FROM trades WHERE trade_seq = 42",
        )
        .unwrap();
    assert_eq!(
        option_row,
        format!(
            "BTC-27DEC26-100000-C|42|42|{}|0.0315|1.5|sell|0.0315|0.0315|3|55.5|MT|B1|C1|15",
            NOW - 1_000
        )
    );
    let v1 = db
        .psql("SELECT seq_gaps IS NULL AND late_trades IS NULL, ewma_halflife_ms, ewma_price, ewma_vw_price, ewma->1->>'halflife_ms' FROM bars WHERE instrument_name = 'ETH-PERPETUAL'")
        .unwrap();
    assert_eq!(v1, "t|30000|100.75|100.625|300000");
    let v2 = db
        .psql("SELECT seq_gaps, late_trades, window_ms, high, low, trade_count FROM bars WHERE instrument_name = 'BTC-PERPETUAL'")
        .unwrap();
    assert_eq!(v2, "1|0|60000|101.25|99.5|3");
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'trades'::regclass")
            .unwrap(),
        "2",
        "one partition per day with trades"
    );

    // Read back, every field equals what was written.
    let url: DatabaseUrl = db.url().parse().unwrap();
    let client = adapters_postgres::connect::connect(&url, "test", "public")
        .await
        .unwrap();
    let mut stored = read::trades(&client, None, 0, NOW + 1).await.unwrap();
    stored.sort_by_key(|t| t.trade_seq);
    let mut expected_trades = trades.clone();
    expected_trades.sort_by_key(|t| t.trade_seq);
    assert_eq!(stored, expected_trades);
    let query = read::BarQuery {
        to_ms: NOW + 1,
        limit: 100,
        ..read::BarQuery::default()
    };
    assert_eq!(read::bars(&client, &query).await.unwrap(), batch.bars);

    // The next write starts from the stored positions.
    let positions = store
        .positions(&[
            TopicPartition::new("raw", 0),
            TopicPartition::new("agg", 1),
            TopicPartition::new("raw", 2),
        ])
        .await
        .unwrap();
    assert_eq!(positions.len(), 2);
    assert_eq!(positions[&TopicPartition::new("raw", 0)], 11);

    // The same rows again under moved positions: stored once, the repeats counted.
    let again = StoreBatch {
        positions: vec![moved("raw", 0, Some(11), 20), moved("agg", 1, Some(5), 9)],
        ..batch.clone()
    };
    let written = store.write(&again).await.unwrap();
    assert_eq!((written.trades, written.bars), (0, 0));
    assert_eq!((written.trade_conflicts, written.bar_conflicts), (2, 2));
    assert_eq!(db.psql("SELECT count(*) FROM trades").unwrap(), "2");

    // Sent again after a lost answer: recognised as written, nothing doubled.
    let written = store.write(&again).await.unwrap();
    assert_eq!((written.trades, written.trade_conflicts), (0, 0));
    assert_eq!(
        db.psql("SELECT next_offset FROM positions ORDER BY topic")
            .unwrap(),
        "9\n20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_moved_by_another_instance_fences_the_write_and_keeps_nothing() {
    let db = TestPostgres::start().unwrap();
    migrated(&db).await;
    let mut a = PgStore::new(config(&db, "a"), FixedClock(NOW));
    let mut b = PgStore::new(config(&db, "b"), FixedClock(NOW));
    let first = StoreBatch {
        bars: vec![bar("BTC-PERPETUAL", NOW - 120_000, false)],
        positions: vec![moved("agg", 0, None, 3)],
        ..StoreBatch::default()
    };
    a.write(&first).await.unwrap();
    // B took the partition at 3 and moved it on.
    let by_b = StoreBatch {
        bars: vec![bar("BTC-PERPETUAL", NOW - 60_000, false)],
        positions: vec![moved("agg", 0, Some(3), 6)],
        ..StoreBatch::default()
    };
    b.write(&by_b).await.unwrap();
    // A, resumed, writes what it had read from 3: refused, nothing of it kept.
    let stale = StoreBatch {
        trades: vec![validated(fields("BTC-PERPETUAL", 1, NOW, 1.0, 1.0))],
        bars: vec![bar("ETH-PERPETUAL", NOW - 60_000, false)],
        positions: vec![moved("agg", 0, Some(3), 5)],
        links: Vec::new(),
    };
    let refused = a.write(&stale).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused}");
    assert_eq!(refused.kind(), ports::ErrorKind::Fenced);
    assert_eq!(db.psql("SELECT count(*) FROM bars").unwrap(), "2");
    assert_eq!(db.psql("SELECT count(*) FROM trades").unwrap(), "0");
    assert_eq!(
        db.psql("SELECT next_offset, writer FROM positions")
            .unwrap(),
        "6|b"
    );

    // A partition both believe new: the second insert of its position is fenced too.
    let new_a = StoreBatch {
        positions: vec![moved("agg", 1, None, 4)],
        ..StoreBatch::default()
    };
    b.write(&new_a).await.unwrap();
    let refused = a.write(&new_a).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_skips_old_trades_and_drops_whole_days() {
    let db = TestPostgres::start().unwrap();
    migrated(&db).await;
    let mut store = PgStore::new(
        StoreConfig {
            retention: Some(Duration::from_secs(3 * 86_400)),
            ..config(&db, "a")
        },
        FixedClock(NOW),
    );
    let day = 86_400_000;
    let batch = StoreBatch {
        trades: (1..=6)
            .map(|d| {
                validated(fields(
                    "BTC-PERPETUAL",
                    d,
                    NOW - i64::try_from(d).unwrap() * day,
                    1.0,
                    1.0,
                ))
            })
            .collect(),
        positions: vec![moved("raw", 0, None, 6)],
        ..StoreBatch::default()
    };
    let written = store.write(&batch).await.unwrap();
    // Days older than three whole days are past retention: seq 4, 5 and 6.
    assert_eq!((written.trades, written.expired), (3, 3));
    store.maintain().await.unwrap();
    let partitions = db
        .psql("SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'trades'::regclass")
        .unwrap();
    assert_eq!(
        partitions,
        "trades_20261204,trades_20261205,trades_20261206,trades_20261207,trades_20261208,trades_20261209"
    );
    // A clock two days later drops the two oldest days whole.
    let mut later = PgStore::new(
        StoreConfig {
            retention: Some(Duration::from_secs(3 * 86_400)),
            ..config(&db, "a")
        },
        FixedClock(NOW + 2 * day),
    );
    later.maintain().await.unwrap();
    assert_eq!(db.psql("SELECT count(*) FROM trades").unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_refuse_a_database_ahead_or_a_table_changed_by_hand() {
    let db = TestPostgres::start().unwrap();
    migrated(&db).await;
    // Applying again is a no-op.
    migrated(&db).await;
    let url: DatabaseUrl = db.url().parse().unwrap();
    let mut client = adapters_postgres::connect::connect(&url, "test", "public")
        .await
        .unwrap();
    db.psql("ALTER TABLE bars DROP COLUMN vwap").unwrap();
    let drift = migrate(&mut client).await.unwrap_err().to_string();
    assert_eq!(
        drift,
        "table bars: column vwap is missing (changed by hand? restore it as migration 1 made it)"
    );
    db.psql("ALTER TABLE bars ADD COLUMN vwap text").unwrap();
    let drift = migrate(&mut client).await.unwrap_err().to_string();
    assert!(
        drift.contains("column vwap is text, not double precision"),
        "{drift}"
    );
    db.psql("INSERT INTO schema_migrations (version, name) VALUES (7, 'future')")
        .unwrap();
    let ahead = migrate(&mut client).await.unwrap_err().to_string();
    assert!(
        ahead.contains("at version 7, newer than this app-sql's 1"),
        "{ahead}"
    );
}
