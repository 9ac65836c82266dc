//! Rows into a session's staging tables by binary COPY, and from there into `trades` and
//! `bars` with `INSERT … SELECT` (`… ON CONFLICT DO NOTHING` should a row be stored already), so
//! a row already stored is counted, never an error and never a second row.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domain::trade::MAX_TIMESTAMP_MS;
use domain::{Aggregate, Trade};
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use crate::error::{Error, Result};

/// `trades`' columns, in COPY order (the Avro record's fields).
pub const TRADE_COLUMNS: &str = "instrument_name, trade_id, trade_seq, \"timestamp\", price, amount, direction, index_price, mark_price, tick_direction, iv, liquidation, block_trade_id, combo_id, contracts";

/// `trades`' column types, in [`TRADE_COLUMNS`] order (binary COPY names them).
pub const TRADE_TYPES: [Type; 15] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT2,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
];

/// `bars`' columns, in COPY order (the Avro record's fields, then the first half-life's EWMA).
pub const BAR_COLUMNS: &str = "instrument_name, window_start, window_end, window_ms, trade_count, volume, buy_volume, sell_volume, vwap, open, high, low, close, ewma, ewma_halflife_ms, ewma_price, ewma_vw_price, first_trade_seq, last_trade_seq, first_trade_timestamp, last_trade_timestamp, seq_gaps, late_trades";

const BAR_TYPES: [Type; 23] = [
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::JSONB,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT8,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::INT8,
];

/// Creates the session's staging tables (temporary, emptied at every commit).
///
/// # Errors
/// [`Error::Database`] if they cannot be created.
pub async fn create_staging(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS trades_staging (LIKE trades) ON COMMIT DELETE ROWS;
             CREATE TEMP TABLE IF NOT EXISTS bars_staging (LIKE bars) ON COMMIT DELETE ROWS",
        )
        .await
        .map_err(Error::db("creating the staging tables"))
}

/// A time in ms since the epoch as a timestamp, saturating at ±[`MAX_TIMESTAMP_MS`] (the
/// client's conversion overflows far beyond it; stored rows are always inside it).
#[must_use]
pub fn time(ms: i64) -> SystemTime {
    let ms = ms.clamp(-MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS);
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A count or sequence number as a `bigint`: they come from Avro `long`s, so they fit.
fn long(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Copies `trades` into `trades_staging`.
///
/// # Errors
/// [`Error::Database`] if the COPY fails.
pub async fn stage_trades(transaction: &Transaction<'_>, trades: &[&Trade]) -> Result<()> {
    let sink = transaction
        .copy_in(&format!(
            "COPY trades_staging ({TRADE_COLUMNS}) FROM STDIN BINARY"
        ))
        .await
        .map_err(Error::db("copying trades"))?;
    let writer = BinaryCopyInWriter::new(sink, &TRADE_TYPES);
    pin_mut!(writer);
    for trade in trades {
        let seq = long(trade.trade_seq);
        let timestamp = time(trade.timestamp);
        let tick = i16::from(trade.tick_direction);
        let liquidation = trade.liquidation.map(domain::Liquidation::as_str);
        let row: [&(dyn ToSql + Sync); 15] = [
            &trade.instrument_name,
            &trade.trade_id,
            &seq,
            &timestamp,
            &trade.price,
            &trade.amount,
            &trade.direction.as_str(),
            &trade.index_price,
            &trade.mark_price,
            &tick,
            &trade.iv,
            &liquidation,
            &trade.block_trade_id,
            &trade.combo_id,
            &trade.contracts,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(Error::db("copying trades"))?;
    }
    writer.finish().await.map_err(Error::db("copying trades"))?;
    Ok(())
}

/// Copies `bars` into `bars_staging`.
///
/// # Errors
/// [`Error::Database`] if the COPY fails.
pub async fn stage_bars(transaction: &Transaction<'_>, bars: &[Aggregate]) -> Result<()> {
    let sink = transaction
        .copy_in(&format!(
            "COPY bars_staging ({BAR_COLUMNS}) FROM STDIN BINARY"
        ))
        .await
        .map_err(Error::db("copying bars"))?;
    let writer = BinaryCopyInWriter::new(sink, &BAR_TYPES);
    pin_mut!(writer);
    for bar in bars {
        let (start, end) = (time(bar.window_start), time(bar.window_end));
        let (first_time, last_time) = (
            time(bar.first_trade_timestamp),
            time(bar.last_trade_timestamp),
        );
        let (count, first_seq, last_seq) = (
            long(bar.trade_count),
            long(bar.first_trade_seq),
            long(bar.last_trade_seq),
        );
        let gaps = bar.seq_gaps.map(long);
        let late = bar.late_trades.map(long);
        let ewma = serde_json::to_value(&bar.ewma).unwrap_or_default();
        let first = bar.ewma.first();
        let (halflife, price, vw_price) = (
            first.map(|e| e.halflife_ms),
            first.map(|e| e.price),
            first.map(|e| e.vw_price),
        );
        let row: [&(dyn ToSql + Sync); 23] = [
            &bar.instrument_name,
            &start,
            &end,
            &bar.window_ms,
            &count,
            &bar.volume,
            &bar.buy_volume,
            &bar.sell_volume,
            &bar.vwap,
            &bar.open,
            &bar.high,
            &bar.low,
            &bar.close,
            &ewma,
            &halflife,
            &price,
            &vw_price,
            &first_seq,
            &last_seq,
            &first_time,
            &last_time,
            &gaps,
            &late,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(Error::db("copying bars"))?;
    }
    writer.finish().await.map_err(Error::db("copying bars"))?;
    Ok(())
}

/// Moves the staged rows of `table` (`trades` or `bars`, from `{table}_staging`) into it;
/// returns how many were new. Tried first as a plain insert, inside a savepoint: with the
/// positions checked, no staged row can be stored already, and `ON CONFLICT DO NOTHING` costs
/// about 60 % more per row (speculative insertion). Should a row be there all the same (a key
/// violation), the savepoint is rolled back and the rows go in with `ON CONFLICT DO NOTHING`,
/// the ones already stored skipped and, by the caller, counted.
///
/// # Errors
/// [`Error::Database`] if an insert fails for another reason.
pub async fn insert_staged(transaction: &mut Transaction<'_>, table: Table) -> Result<u64> {
    let (columns, what) = match table {
        Table::Trades => (TRADE_COLUMNS, "inserting trades"),
        Table::Bars => (BAR_COLUMNS, "inserting bars"),
    };
    let name = table.name();
    let insert = format!("INSERT INTO {name} ({columns}) SELECT {columns} FROM {name}_staging");
    let savepoint = transaction
        .savepoint("plain_insert")
        .await
        .map_err(Error::db(what))?;
    match savepoint.execute(&insert, &[]).await {
        Ok(inserted) => {
            savepoint.commit().await.map_err(Error::db(what))?;
            return Ok(inserted);
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            savepoint.rollback().await.map_err(Error::db(what))?;
        }
        Err(e) => return Err(Error::db(what)(e)),
    }
    transaction
        .execute(&format!("{insert} ON CONFLICT DO NOTHING"), &[])
        .await
        .map_err(Error::db(what))
}

/// The tables rows are staged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `trades`.
    Trades,
    /// `bars`.
    Bars,
}

impl Table {
    /// The table's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Table::Trades => "trades",
            Table::Bars => "bars",
        }
    }
}
