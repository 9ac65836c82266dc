//! The span that receives a notification lends its context to the batch.
//!
//! Its own test binary: `tracing` caches per-callsite interest process-wide, so a parallel test
//! without a subscriber could otherwise disable the span under test.
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::sync::Arc;
use std::time::Duration;

use adapters_deribit::{Channel, DeribitConfig, DeribitFeed};
use common::market;
use ports::{FeedEvent, StartPositions, TradeFeed};
use testkit::wait_for;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn each_batch_carries_the_context_of_the_span_that_received_it() {
    use tracing_subscriber::layer::SubscriberExt;
    // Spans must be enabled to have metadata; the extractor stands in for OpenTelemetry.
    let subscriber =
        tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO);
    let _guard = tracing::subscriber::set_default(subscriber);
    let extractor: adapters_deribit::TraceExtractor = Arc::new(|span: &tracing::Span| {
        span.metadata().map(|m| ports::TraceContext {
            traceparent: m.name().to_owned(),
            tracestate: None,
        })
    });
    let fake = market().await;
    fake.send_test_requests_every(Duration::from_millis(200));
    let channels = Channel::parse_list("trades.future.BTC.100ms").unwrap();
    let config = DeribitConfig::new(fake.url(), channels);
    let mut feed = DeribitFeed::spawn(config, StartPositions::new(), Some(extractor)).unwrap();
    let metrics = feed.metrics();
    assert!(
        wait_for(DEADLINE, || metrics
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed))
        .await
    );
    fake.trade("BTC-PERPETUAL", 3);
    let batch = tokio::time::timeout(DEADLINE, async {
        loop {
            // Progress may come first (a quiet market is complete up to now, too).
            match feed.next_event().await.unwrap().unwrap() {
                FeedEvent::Trades(batch) => return batch,
                FeedEvent::Progress(_) => {}
            }
        }
    })
    .await
    .unwrap();

    assert_eq!(batch.trades.len(), 3, "one notification, one batch");
    assert_eq!(batch.trace.unwrap().traceparent, "deribit.notification");
}
