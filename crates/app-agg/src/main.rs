//! app-agg binary: with no subcommand, the Kafka service (configured from the environment);
//! `app-agg replay …` recomputes aggregates from a capture without Kafka.

// jemalloc returns freed memory to the system steadily; with glibc malloc the commit cycles'
// short-lived allocations left resident memory higher and spikier.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use adapters_kafka::commit::KafkaCommitter;
use adapters_kafka::consumer::KafkaTradeLog;
use anyhow::Context;
use app_agg::config::{AggConfig, Settings, bar_sizes};
use app_agg::probe::AggProbe;
use app_agg::replay::{ReplayError, replay};
use app_agg::service::{Service, ServiceError};
use clap::{Parser, Subcommand};
use domain::{AggregatorConfig, WatermarkRule};
use ports::{CommitError, LogError, SystemClock};
use shell::config::ServiceVariables as _;
use shell::duration::parse_millis;
use shell::http::ProbeServer;

/// Windowed trade aggregates (OHLC, volume, VWAP, EWMA) per instrument.
#[derive(Debug, Parser)]
#[command(name = "app-agg", version, about)]
struct Cli {
    /// What to do; without one, run the service.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute aggregates from captured Deribit trades (JSON lines), no Kafka needed.
    Replay(ReplayArgs),
    /// Exit 0 only if the running service's /readyz (at HTTP_ADDR) answers OK.
    Healthcheck,
    /// Validate the environment as the service would, print the result, connect to nothing.
    CheckConfig,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// JSON-lines file: one Deribit trade object or one trades notification per line (`-` = stdin).
    #[arg(long)]
    input: PathBuf,
    /// Where to write one JSON aggregate per line (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Bar sizes, comma-separated, aligned to the Unix epoch; larger ones are rolled up from the
    /// smallest and must be multiples of it.
    #[arg(long, default_value = "1m", value_delimiter = ',', value_parser = parse_millis)]
    window: Vec<i64>,
    /// EWMA half-lives, comma-separated.
    #[arg(long, default_value = "30s,5m", value_delimiter = ',', value_parser = parse_millis)]
    halflife: Vec<i64>,
    /// How long after its end a window still accepts trades.
    #[arg(long, default_value = "0s", value_parser = parse_millis)]
    grace: i64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve_from_env(),
        Some(Command::Healthcheck) => shell::http::healthcheck_command("app-agg", "0.0.0.0:8091"),
        Some(Command::CheckConfig) => {
            shell::check_config_command("app-agg", AggConfig::settings_from_env())
        }
        Some(Command::Replay(args)) => match run_replay(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // `| head` closing the pipe is a normal way to stop reading output.
                if let Some(ReplayError::Write(io)) = e.downcast_ref::<ReplayError>()
                    && io.kind() == io::ErrorKind::BrokenPipe
                {
                    return ExitCode::SUCCESS;
                }
                eprintln!("app-agg replay: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve_from_env() -> ExitCode {
    shell::run_service_with("app-agg", AggConfig::settings_from_env(), serve, exit_code)
}

/// Fenced (another instance took over) exits with its own code; any other failure with 1.
fn exit_code(error: &anyhow::Error) -> u8 {
    let fenced = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ServiceError>(),
            Some(
                ServiceError::Commit(CommitError::Fenced(_))
                    | ServiceError::Log(LogError::Fenced(_))
            )
        )
    });
    if fenced { shell::EXIT_FENCED } else { 1 }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let broker = &settings.broker;
    let registry = broker.prepare(&settings.topics()).await?;
    let log = KafkaTradeLog::connect(&broker.kafka, Arc::clone(&registry), &settings.log)
        .context("joining the consumer group")?;
    let committer = KafkaCommitter::connect(
        &broker.kafka,
        &registry,
        log.group_offsets(),
        settings.commit,
    )
    .await
    .context("setting up the commit cycle")?;
    let (lag, dead_lettered) = (log.lag_probe(), log.dead_lettered());
    let mut service = Service::new(log, committer, SystemClock, settings.aggregator);
    let probe = Arc::new(AggProbe {
        service: service.metrics(),
        dead_lettered,
        lag,
        topic: settings.log.topic.clone(),
        marker_timeout: settings.marker_timeout,
    });
    let http = ProbeServer::start(settings.http_addr, probe)
        .await
        .with_context(|| format!("listening on HTTP_ADDR {}", settings.http_addr))?;
    let stats = service
        .run(settings.commit_interval, shell::http::shutdown_signal())
        .await
        .context("aggregating")?;
    http.stop().await;
    tracing::info!(
        cycles = stats.cycles,
        aggregates = stats.aggregates,
        "app-agg stopped cleanly."
    );
    Ok(())
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<()> {
    let (window, rollups) = bar_sizes(&args.window).context("--window")?;
    let config = AggregatorConfig::new(
        window,
        args.grace,
        // A file is complete: each instrument's own trades close its windows (see replay.rs).
        WatermarkRule::TradeTime { max_delay_ms: 0 },
        args.halflife,
    )?
    .with_rollups(rollups)
    .context("--window")?;
    let input: Box<dyn io::BufRead> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("opening input {}", args.input.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let output: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path).with_context(|| format!("creating output {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let summary = replay(input, BufWriter::new(output), io::stderr().lock(), config)?;
    eprintln!("{summary}");
    Ok(())
}
