//! app-raw binary: configuration from the environment, then Deribit → Kafka until a signal.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use adapters_deribit::DeribitFeed;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::topics::TopicSpec;
use anyhow::Context;
use app_raw::config::{DEFAULT_PARTITIONS, RawConfig, Settings};
use app_raw::probe::RawProbe;
use app_raw::run::{RunCounters, run};
use ports::TradeSink;
use shell::config::ServiceVariables as _;
use shell::http::ProbeServer;
use tracing::info;

const USAGE: &str = "\
app-raw: Deribit trades into Kafka (Avro, Schema Registry), with progress markers.

Usage: app-raw [COMMAND]

Commands:
  (none)        run the service; configuration comes from the environment
                (KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL are required; README, Configuration)
  check-config  validate the configuration as the service would and print it; connects to nothing
  history       fetch every trade of some channels' instruments in a time range from Deribit's
                history into a JSON-lines file or a topic, resumably (app-raw history --help)
  healthcheck   exit 0 if the running service's /readyz on HTTP_ADDR says ready, else 1 and why

Options:
  -h, --help     this text
  -V, --version  the version
";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => {
            return shell::http::healthcheck_command("app-raw", "0.0.0.0:8080");
        }
        Some("history") => return app_raw::history::command::main(std::env::args().skip(2)),
        Some("check-config") => {
            return shell::check_config_command("app-raw", RawConfig::settings_from_env());
        }
        Some("-h" | "--help" | "help") => {
            // `| head` closing the pipe early is fine.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), USAGE.as_bytes());
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            let _ = writeln!(std::io::stdout(), "app-raw {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "app-raw: unknown command {other:?}; accepted: healthcheck, check-config, history, --help, --version, or none to run the service"
            );
            return ExitCode::from(2);
        }
    }
    shell::run_service("app-raw", RawConfig::settings_from_env(), serve)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let broker = &settings.broker;
    let registry = broker
        .prepare(&[TopicSpec::new(&settings.topic, DEFAULT_PARTITIONS)])
        .await?;
    let sink = KafkaTradeSink::connect(&broker.kafka, registry, &settings.topic)
        .await
        .context("connecting to Kafka and the schema registry")?
        .with_writer(&settings.writer_id)
        .context("RAW_WRITER_ID")?;
    let seed = sink
        .last_positions()
        .await
        .context("reading the raw topic's last positions")?;
    info!(instruments = seed.len(), topic = %settings.topic, "Resuming after the last published trades.");
    let mut feed = DeribitFeed::spawn(
        settings.deribit,
        seed,
        Some(Arc::new(telemetry::span_trace_context)),
    )
    .context("starting the Deribit feed")?;
    let counters = Arc::new(RunCounters::default());
    let probe = Arc::new(RawProbe {
        feed: feed.metrics(),
        run: Arc::clone(&counters),
    });
    let http = ProbeServer::start(settings.http_addr, probe)
        .await
        .with_context(|| format!("listening on HTTP_ADDR {}", settings.http_addr))?;
    let stats = run(
        &mut feed,
        &sink,
        shell::http::shutdown_signal(),
        &counters,
        settings.progress_interval,
    )
    .await
    .context("publishing trades")?;
    http.stop().await;
    feed.shutdown().await;
    tokio::time::timeout(settings.shutdown_timeout, sink.flush())
        .await
        .context("flushing the producer took too long")?
        .context("flushing the producer")?;
    info!(
        batches = stats.batches,
        trades = stats.trades,
        "app-raw stopped cleanly."
    );
    Ok(())
}
