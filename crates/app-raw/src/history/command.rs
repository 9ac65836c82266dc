//! The `history` subcommand: arguments (exit code 2 if bad), the Deribit endpoint from the
//! environment as the service reads it (and, for `--topic`, the service's Kafka and registry
//! variables), then the run with its closing summary. A failed run ends with one line on stderr
//! and exit code 1; what it saved can be resumed. A fresh run (no progress file) refuses to
//! overwrite a non-empty output file without `--force`, and `--topic` refuses the live raw
//! topic (`RAW_TOPIC`): one line, exit code 2.

use std::process::ExitCode;

use adapters_deribit::DeribitConfig;
use adapters_deribit::config::PRODUCTION_URL;
use adapters_deribit::history_fetch::HistoryClient;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::topics::TopicSpec;
use envconfig::Envconfig;
use shell::ConfigError;
use shell::broker::Broker;
use shell::config::{ServiceVariables, from_envconfig, non_empty, utf8_env};

use super::HistoryError;
use super::args::{ArgsError, HELP, HistoryArgs, Target, format_utc};
use super::bar::ProgressBar;
use super::fetch::{FetchSummary, fetch};
use super::output::{FileOutput, TopicOutput};
use super::progress::{Progress, open_output};
use crate::config::{DEFAULT_PARTITIONS, RawConfig};

/// The variables a file run reads: the service's Deribit endpoint.
#[derive(Envconfig)]
struct HistoryVariables {
    /// Deribit WebSocket endpoint, as the service reads it.
    #[envconfig(from = "DERIBIT_URL", default = "wss://www.deribit.com/ws/api/v2")]
    deribit_url: String,
}

/// Everything a run needs, validated.
#[derive(Debug)]
pub struct HistorySettings {
    /// The arguments.
    pub args: HistoryArgs,
    /// The endpoint (and timeouts, backoff) of the client.
    pub deribit: DeribitConfig,
    /// Kafka and the registry, for `--topic`.
    pub broker: Option<Broker>,
}

/// Runs `app-raw history` with the arguments after `history`.
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match HistoryArgs::parse(args) {
        Ok(args) => args,
        Err(ArgsError::Help) => {
            let _ = std::io::Write::write_all(&mut std::io::stdout(), HELP.as_bytes());
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Invalid(reason)) => {
            eprintln!("app-raw history: {reason}");
            return ExitCode::from(shell::EXIT_BAD_CONFIG);
        }
    };
    let settings = settings_from_env(args);
    shell::run_service_with("app-raw history", settings, run, HistoryError::exit_code)
}

/// The settings from the environment.
///
/// # Errors
/// [`ConfigError`] naming the variable.
pub fn settings_from_env(args: HistoryArgs) -> Result<HistorySettings, ConfigError> {
    let (url, broker) = match &args.target {
        Target::File(_) => {
            let vars = HistoryVariables::init_from_hashmap(&utf8_env()?).map_err(from_envconfig)?;
            (vars.deribit_url, None)
        }
        Target::Topic(topic) => {
            let settings = RawConfig::settings_from_env()?;
            if *topic == settings.topic {
                return Err(ConfigError {
                    variable: "RAW_TOPIC".into(),
                    value: settings.topic,
                    accepted: "the live raw topic is not a --topic for history: it writes no \
                               progress markers and its trades would break the topic's \
                               per-instrument trade_seq order; give --topic another name"
                        .into(),
                });
            }
            (settings.deribit.url, Some(settings.broker))
        }
    };
    let url = non_empty(
        "DERIBIT_URL",
        &url,
        &format!("a wss:// URL such as {PRODUCTION_URL}"),
    )?;
    if !(url.starts_with("wss://") || url.starts_with("ws://")) {
        return Err(ConfigError {
            variable: "DERIBIT_URL".into(),
            value: url,
            accepted: format!("a wss:// URL such as {PRODUCTION_URL}"),
        });
    }
    Ok(HistorySettings {
        args,
        deribit: DeribitConfig::new(url, Vec::new()),
        broker,
    })
}

/// The run, its failure said in one line on stderr.
async fn run(settings: HistorySettings) -> Result<(), HistoryError> {
    let outcome = execute(settings).await;
    match &outcome {
        Err(e @ HistoryError::Refused(_)) => eprintln!("app-raw history: {e}"),
        Err(e) => eprintln!("app-raw history: error: {e}"),
        Ok(()) => {}
    }
    outcome
}

async fn execute(settings: HistorySettings) -> Result<(), HistoryError> {
    let HistorySettings {
        args,
        deribit,
        broker,
    } = settings;
    let mut client = HistoryClient::new(deribit);
    let path = args.progress.as_deref();
    let existing = match path {
        Some(path) => Progress::load(path)?,
        None => None,
    };
    if let (Some(existing), Some(path)) = (&existing, path) {
        existing.check_same_run(path, args.from_ms, args.to_ms, &args.channels_text)?;
    }
    if let Target::File(file) = &args.target
        && existing.is_none()
        && !args.force
    {
        refuse_to_overwrite(file)?;
    }
    let resumed = existing.is_some();
    let mut progress = match existing {
        Some(progress) => {
            eprintln!(
                "app-raw history: resuming: {}/{} instruments done, {} trades written",
                progress.next.min(progress.instruments.len()),
                progress.instruments.len(),
                progress.trades
            );
            progress
        }
        None => {
            let instruments = client
                .instruments(&args.channels, args.from_ms, args.to_ms)
                .await?;
            Progress::start(args.from_ms, args.to_ms, &args.channels_text, instruments)
        }
    };
    eprintln!(
        "app-raw history: {} instruments, {} to {}",
        progress.instruments.len(),
        format_utc(args.from_ms),
        format_utc(args.to_ms)
    );
    let mut bar = ProgressBar::new(progress.instruments.len(), progress.trades);
    let (summary, target) = match &args.target {
        Target::File(file) => {
            let handle = open_output(file, resumed.then_some(progress.output_bytes))?;
            if let Some(path) = path {
                // From here on a rerun resumes (with the same instruments) instead of starting over.
                progress.save(path)?;
            }
            let mut output = FileOutput::new(handle, file, progress.output_bytes);
            let summary = fetch(&mut client, &mut output, &mut progress, path, &mut bar).await?;
            (summary, file.display().to_string())
        }
        Target::Topic(topic) => {
            let broker = broker.ok_or_else(|| HistoryError::Broker("no Kafka settings".into()))?;
            let registry = broker
                .prepare(&[TopicSpec::new(topic, DEFAULT_PARTITIONS)])
                .await
                .map_err(|e| HistoryError::Broker(format!("{e}: {}", source_text(&e))))?;
            let sink = KafkaTradeSink::connect(&broker.kafka, registry, topic)
                .await
                .map_err(|e| HistoryError::Broker(format!("connecting to Kafka: {e}")))?;
            let mut output = TopicOutput::new(sink);
            let summary = fetch(&mut client, &mut output, &mut progress, path, &mut bar).await?;
            (summary, format!("topic {topic}"))
        }
    };
    bar.finish(progress.next, progress.trades);
    eprintln!("{}", summary_line(&summary, &client, &target));
    Ok(())
}

/// A fresh run would truncate `file`: refused if it has anything in it.
fn refuse_to_overwrite(file: &std::path::Path) -> Result<(), HistoryError> {
    match std::fs::metadata(file) {
        Ok(meta) if meta.len() > 0 => Err(HistoryError::Refused(format!(
            "{} exists ({} bytes) and no progress file says how far it is; delete it to start \
             over, pass --progress with the progress file of the run that wrote it to resume, \
             or --force to overwrite it",
            file.display(),
            meta.len()
        ))),
        _ => Ok(()),
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    e.source().map_or_else(String::new, ToString::to_string)
}

/// The closing line: what was fetched, how fast, with how many requests.
fn summary_line(summary: &FetchSummary, client: &HistoryClient, target: &str) -> String {
    let stats = client.stats();
    let seconds = summary.elapsed.as_secs_f64().max(1e-3);
    #[allow(clippy::cast_precision_loss)]
    let (rate, per_10k) = (
        summary.trades as f64 / seconds,
        stats.requests as f64 * 10_000.0 / (summary.trades.max(1) as f64),
    );
    format!(
        "app-raw history: done: {} instruments, {} trades ({} by this run) in {seconds:.1} s, \
         {rate:.0} trades/s, {} requests ({per_10k:.1} per 10k trades), {} rate-limited, \
         {} retried, {} skipped, {} missing from Deribit's history -> {target}",
        summary.instruments,
        summary.total_trades,
        summary.trades,
        stats.requests,
        stats.rate_limited,
        stats.retries,
        summary.skipped,
        summary.unfillable,
    )
}
