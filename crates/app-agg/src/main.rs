//! app-agg binary: `app-agg replay …` recomputes aggregates from a capture. The Kafka service
//! itself is wired by the services issue.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use app_agg::duration::parse_millis;
use app_agg::replay::{ReplayError, replay};
use clap::{Parser, Subcommand};
use domain::{AggregatorConfig, WindowSize};

/// Windowed trade aggregates (OHLC, volume, VWAP, EWMA) per instrument.
#[derive(Debug, Parser)]
#[command(name = "app-agg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute aggregates from captured Deribit trades (JSON lines), no Kafka needed.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// JSON-lines file: one Deribit trade object or one trades notification per line (`-` = stdin).
    #[arg(long)]
    input: PathBuf,
    /// Where to write one JSON aggregate per line (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Tumbling window size, aligned to the Unix epoch.
    #[arg(long, default_value = "1m", value_parser = parse_millis)]
    window: i64,
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
        Command::Replay(args) => match run_replay(args) {
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

fn run_replay(args: ReplayArgs) -> anyhow::Result<()> {
    let config = AggregatorConfig::new(
        WindowSize::from_millis(args.window)?,
        args.grace,
        0,
        args.halflife,
    )?;
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
