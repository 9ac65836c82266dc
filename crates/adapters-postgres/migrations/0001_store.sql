-- app-sql's store, version 1: trades and bars with the Avro records' field names, and the
-- positions that make loading them exactly once. Applied by app-sql at start (or
-- `app-sql migrate`) under an advisory lock, in the schema SQL_SCHEMA names.

-- Every field of the raw topic's Trade record. Range-partitioned by trade time, one partition
-- a UTC day (trades_YYYYMMDD), created ahead by app-sql and dropped whole by its retention.
CREATE TABLE trades (
    instrument_name text             NOT NULL,
    trade_id        text             NOT NULL,
    trade_seq       bigint           NOT NULL CHECK (trade_seq >= 0),
    "timestamp"     timestamptz      NOT NULL,
    price           double precision NOT NULL,
    amount          double precision NOT NULL,
    direction       text             NOT NULL CHECK (direction IN ('buy', 'sell')),
    index_price     double precision NOT NULL,
    mark_price      double precision NOT NULL,
    tick_direction  smallint         NOT NULL CHECK (tick_direction BETWEEN 0 AND 3),
    iv              double precision,
    liquidation     text             CHECK (liquidation IN ('M', 'T', 'MT')),
    block_trade_id  text,
    combo_id        text,
    contracts       double precision,
    -- A trade's identity is (instrument_name, trade_seq); PostgreSQL wants the partition key in
    -- the key too, and a trade's time never changes, so this is still one row per trade.
    PRIMARY KEY (instrument_name, trade_seq, "timestamp")
) PARTITION BY RANGE ("timestamp");

-- "Trades of one instrument over a time range".
CREATE INDEX trades_instrument_time ON trades (instrument_name, "timestamp");

-- Every field of the aggregates topic's TradeAggregate record, both schema versions (a
-- version-1 record has seq_gaps and late_trades NULL). The EWMA half-lives are configurable,
-- so their values are one jsonb array as in the record ([{halflife_ms, price, vw_price}, …]),
-- and the first half-life's values are plain columns too, for charts and indexes.
CREATE TABLE bars (
    instrument_name       text             NOT NULL,
    window_start          timestamptz      NOT NULL,
    window_end            timestamptz      NOT NULL,
    window_ms             bigint           NOT NULL CHECK (window_ms > 0),
    trade_count           bigint           NOT NULL,
    volume                double precision NOT NULL,
    buy_volume            double precision NOT NULL,
    sell_volume           double precision NOT NULL,
    vwap                  double precision NOT NULL,
    open                  double precision NOT NULL,
    high                  double precision NOT NULL,
    low                   double precision NOT NULL,
    close                 double precision NOT NULL,
    ewma                  jsonb            NOT NULL,
    ewma_halflife_ms      bigint,
    ewma_price            double precision,
    ewma_vw_price         double precision,
    first_trade_seq       bigint           NOT NULL,
    last_trade_seq        bigint           NOT NULL,
    first_trade_timestamp timestamptz      NOT NULL,
    last_trade_timestamp  timestamptz      NOT NULL,
    seq_gaps              bigint,
    late_trades           bigint,
    -- "Bars of one instrument and size over a time range" is a scan of this key.
    PRIMARY KEY (instrument_name, window_ms, window_start)
);

-- How far each source partition is stored: written in the same transaction as the rows it
-- covers, and the only positions app-sql resumes from (the consumer group's are advisory).
CREATE TABLE positions (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    -- The next offset to read: the last stored record's offset + 1.
    next_offset    bigint      NOT NULL,
    -- Which app-sql instance wrote it last (group/host/process/start time).
    writer         text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
