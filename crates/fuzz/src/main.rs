//! `fuzz [--seconds N] [--seed S] [--out DIR] [TARGET…|all]` runs each target for N seconds;
//! `fuzz --reproduce TARGET FILE` runs one saved input. Exit 1 if anything was found.
#![allow(clippy::print_stdout)] // a command-line tool reporting on stdout

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fuzz::{Report, Target};

const USAGE: &str = "usage: fuzz [--seconds N] [--seed S] [--out DIR] [TARGET...|all]\n       fuzz --reproduce TARGET FILE\ntargets: deribit-frame deribit-history replay avro env";

struct Args {
    seconds: u64,
    seed: u64,
    out: PathBuf,
    targets: Vec<Target>,
    reproduce: Option<(Target, PathBuf)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 60,
        seed: 0x5eed,
        out: PathBuf::from("target/fuzz-findings"),
        targets: Vec::new(),
        reproduce: None,
    };
    let mut rest = std::env::args().skip(1);
    let target = |name: &str| {
        Target::from_name(name).ok_or_else(|| format!("unknown target {name:?}\n{USAGE}"))
    };
    while let Some(arg) = rest.next() {
        let mut value = |flag: &str| {
            rest.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--reproduce" => {
                let name = value("--reproduce")?;
                let file = value("--reproduce")?;
                args.reproduce = Some((target(&name)?, PathBuf::from(file)));
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "all" => args.targets.extend(Target::ALL),
            name => args.targets.push(target(name)?),
        }
    }
    if args.targets.is_empty() {
        args.targets.extend(Target::ALL);
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if let Some((target, file)) = args.reproduce {
        return reproduce(target, &file);
    }
    let budget = Duration::from_secs(args.seconds);
    let mut found = false;
    for target in args.targets {
        match fuzz::run(target, budget, args.seed, &args.out) {
            Ok(report) => {
                print_report(target, budget, &report);
                found |= !report.findings.is_empty();
            }
            Err(e) => {
                eprintln!(
                    "{}: cannot write findings under {}: {e}",
                    target.name(),
                    args.out.display()
                );
                return ExitCode::from(2);
            }
        }
    }
    if found {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_report(target: Target, budget: Duration, report: &Report) {
    let (peak, len) = report.worst_memory;
    #[allow(clippy::cast_precision_loss)] // figures for a person
    let per_second = report.inputs as f64 / budget.as_secs_f64();
    println!(
        "{:<16} {:>11} inputs ({per_second:>8.0}/s)  {:>5} signatures  worst peak {:>8.1} KiB for a {:>8}-byte input  retained {:>6.1} KiB  slowest {:>7.1} ms  findings {}",
        target.name(),
        report.inputs,
        report.signatures,
        peak as f64 / 1024.0,
        len,
        report.retained as f64 / 1024.0,
        report.slowest.as_secs_f64() * 1e3,
        report.findings.len(),
    );
    for finding in &report.findings {
        println!("  {}", finding.display());
    }
}

fn reproduce(target: Target, file: &PathBuf) -> ExitCode {
    let input = match std::fs::read(file) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    // Once to fill what parsers build lazily on first use, once to measure.
    let _ = fuzz::measure(target, &input);
    let cost = fuzz::measure(target, &input);
    println!(
        "{}: {} bytes, peak {} bytes (bound {}), retained {} bytes, {:.1} ms",
        target.name(),
        input.len(),
        cost.peak,
        target.memory_bound(input.len()),
        cost.retained,
        cost.took.as_secs_f64() * 1e3
    );
    if cost.peak > target.memory_bound(input.len())
        || cost.retained > 0
        || cost.took > fuzz::SLOW_AFTER
    {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
