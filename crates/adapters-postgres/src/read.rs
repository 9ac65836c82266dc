//! Reading rows back as the domain's types: bars of an instrument and size over a time range
//! (the chart's query, a scan of the `bars` key) and trades of an instrument over a time range
//! (a scan of `trades_instrument_time`). Every query is parameterised.

use std::time::SystemTime;

use domain::{Aggregate, Direction, EwmaValue, Liquidation, Trade, TradeFields};
use tokio_postgres::{Client, Row};

use crate::copy::{BAR_COLUMNS, TRADE_COLUMNS, time};
use crate::error::{Error, Result};

/// Which bars to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BarQuery {
    /// One instrument, or every one.
    pub instrument: Option<String>,
    /// One bar size (ms), or every one.
    pub window_ms: Option<i64>,
    /// Window starts from (inclusive), ms.
    pub from_ms: i64,
    /// Window starts before (exclusive), ms.
    pub to_ms: i64,
    /// At most this many, the latest of the range.
    pub limit: i64,
}

/// Bars matching `query`, in `(instrument, window_ms, window_start)` order.
///
/// # Errors
/// [`Error::Database`] if the query fails or a row does not read back as a bar.
pub async fn bars(client: &Client, query: &BarQuery) -> Result<Vec<Aggregate>> {
    let rows = client
        .query(
            &format!(
                "SELECT * FROM (
                     SELECT {BAR_COLUMNS} FROM bars
                     WHERE ($1::text IS NULL OR instrument_name = $1)
                       AND ($2::bigint IS NULL OR window_ms = $2)
                       AND window_start >= $3 AND window_start < $4
                     ORDER BY window_start DESC LIMIT $5
                 ) latest ORDER BY instrument_name, window_ms, window_start"
            ),
            &[
                &query.instrument,
                &query.window_ms,
                &time(query.from_ms),
                &time(query.to_ms),
                &query.limit,
            ],
        )
        .await
        .map_err(Error::db("reading bars"))?;
    rows.iter().map(bar).collect()
}

/// Trades of `instrument` (or every one) with timestamps in [`from_ms`, `to_ms`), in
/// `(instrument, trade_seq)` order.
///
/// # Errors
/// [`Error::Database`] if the query fails or a row does not read back as a trade.
pub async fn trades(
    client: &Client,
    instrument: Option<&str>,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Trade>> {
    let rows = client
        .query(
            &format!(
                "SELECT {TRADE_COLUMNS} FROM trades
                 WHERE ($1::text IS NULL OR instrument_name = $1)
                   AND \"timestamp\" >= $2 AND \"timestamp\" < $3
                 ORDER BY instrument_name, trade_seq"
            ),
            &[&instrument, &time(from_ms), &time(to_ms)],
        )
        .await
        .map_err(Error::db("reading trades"))?;
    rows.iter().map(trade).collect()
}

/// Milliseconds since the epoch of a timestamp.
#[must_use]
pub fn millis(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, column: &'static str) -> Result<T> {
    row.try_get(column).map_err(Error::db(column))
}

fn count(row: &Row, column: &'static str) -> Result<u64> {
    Ok(u64::try_from(get::<i64>(row, column)?).unwrap_or(0))
}

fn bar(row: &Row) -> Result<Aggregate> {
    let ewma: serde_json::Value = get(row, "ewma")?;
    let ewma: Vec<EwmaValue> = serde_json::from_value(ewma).unwrap_or_default();
    let optional = |column| -> Result<Option<u64>> {
        Ok(get::<Option<i64>>(row, column)?.map(|v| u64::try_from(v).unwrap_or(0)))
    };
    Ok(Aggregate {
        instrument_name: get(row, "instrument_name")?,
        window_start: millis(get(row, "window_start")?),
        window_end: millis(get(row, "window_end")?),
        window_ms: get(row, "window_ms")?,
        trade_count: count(row, "trade_count")?,
        volume: get(row, "volume")?,
        buy_volume: get(row, "buy_volume")?,
        sell_volume: get(row, "sell_volume")?,
        vwap: get(row, "vwap")?,
        open: get(row, "open")?,
        high: get(row, "high")?,
        low: get(row, "low")?,
        close: get(row, "close")?,
        ewma,
        first_trade_seq: count(row, "first_trade_seq")?,
        last_trade_seq: count(row, "last_trade_seq")?,
        first_trade_timestamp: millis(get(row, "first_trade_timestamp")?),
        last_trade_timestamp: millis(get(row, "last_trade_timestamp")?),
        seq_gaps: optional("seq_gaps")?,
        late_trades: optional("late_trades")?,
    })
}

fn trade(row: &Row) -> Result<Trade> {
    // The table's checks allow only these names and codes.
    let direction = Direction::from_name(get(row, "direction")?).unwrap_or(Direction::Buy);
    let liquidation = get::<Option<&str>>(row, "liquidation")?.and_then(Liquidation::from_code);
    let fields = TradeFields {
        instrument_name: get(row, "instrument_name")?,
        trade_id: get(row, "trade_id")?,
        trade_seq: count(row, "trade_seq")?,
        timestamp: millis(get(row, "timestamp")?),
        price: get(row, "price")?,
        amount: get(row, "amount")?,
        direction,
        index_price: get(row, "index_price")?,
        mark_price: get(row, "mark_price")?,
        tick_direction: u8::try_from(get::<i16>(row, "tick_direction")?).unwrap_or(u8::MAX),
        iv: get(row, "iv")?,
        liquidation,
        block_trade_id: get(row, "block_trade_id")?,
        combo_id: get(row, "combo_id")?,
        contracts: get(row, "contracts")?,
    };
    // The table's checks hold what `Trade::new` checks; a row that still breaks one is
    // reported, not wrapped.
    Ok(Trade::new(fields)?)
}
