//! A mutational fuzz harness for every parser of external data: Deribit frames and history
//! pages, `replay` files, Kafka record values (Confluent framing and Avro) and the environment.
//!
//! cargo-fuzz needs a nightly toolchain; this harness runs on stable. Each input is checked for
//! the ways hostile data hurt a service: a panic (caught, the input saved), a hang (a watchdog
//! saves the input and exits), memory out of proportion to the input (a counting allocator
//! measures each input's peak against [`Target::memory_bound`]) and memory an input leaves
//! allocated after its run (summed over the run against [`LEAK_BOUND`]: a leak of a few bytes
//! per input takes a long-running service, or this harness, down as surely). The input under test
//! is always in `<out>/<target>/current`, so even a crash the process cannot catch (a stack
//! overflow) leaves its reproducer behind.
//!
//! * [`mutate`]: the mutations and the generator.
//! * [`targets`]: the targets, their seeds and memory bounds.
//! * [`watchdog`]: the hang detector and the file holding the current input.

pub mod mutate;
pub mod targets;
pub mod watchdog;

use std::collections::HashSet;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;

use crate::mutate::{Rng, mutate};
pub use crate::targets::Target;
use crate::watchdog::Watchdog;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// Longest input the mutations build (deep nesting and repeated elements reach ~600 KB).
pub const MAX_INPUT: usize = 2 << 20;
/// Inputs kept to mutate further, besides the seeds.
const POOL: usize = 512;
/// Longest input kept in the pool: huge inputs are built afresh, not mutated further (that
/// would slow every later input down).
const POOL_INPUT: usize = 64 << 10;
/// Bytes all inputs of a run may leave allocated together (a parser's first run fills a few
/// lazily built tables); past it, the input that kept the most is saved as a leak.
pub const LEAK_BOUND: usize = 1 << 20;
/// An input taking longer than this is reported as slow (a hang is [`watchdog::HANG_AFTER`]).
pub const SLOW_AFTER: Duration = Duration::from_secs(2);

/// What one run of a target found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run.
    pub inputs: u64,
    /// Distinct signatures seen (a rough measure of the paths reached).
    pub signatures: usize,
    /// Largest peak allocation of one input, and that input's length.
    pub worst_memory: (usize, usize),
    /// Bytes the inputs left allocated after their runs, summed.
    pub retained: usize,
    /// Slowest input.
    pub slowest: Duration,
    /// Files of the inputs that panicked, were slow or took too much memory.
    pub findings: Vec<PathBuf>,
}

/// Runs `target` for `budget` from `seed`, saving findings under `out/<target>/`.
///
/// # Errors
/// If the findings directory cannot be written.
pub fn run(target: Target, budget: Duration, seed: u64, out: &Path) -> io::Result<Report> {
    let dir = out.join(target.name());
    std::fs::create_dir_all(&dir)?;
    let watchdog = Watchdog::start(&dir)?;
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));

    let mut pool: Vec<Vec<u8>> = target.seeds();
    let mut seen = HashSet::new();
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let started = Instant::now();
    let mut input = Vec::new();
    let mut most_retained = (0, Vec::new());
    while started.elapsed() < budget {
        input.clear();
        let start: &Vec<u8> = rng.pick(&pool);
        input.extend_from_slice(start);
        // One in sixteen inputs is a pool entry as it is (a seed, or a kept mutant) run again.
        if rng.below(16) != 0 {
            let other = rng.pick(pool.as_slice()).clone();
            mutate(&mut rng, &mut input, &other, MAX_INPUT);
        }
        let (finding, retained) = check(
            target,
            &input,
            &watchdog,
            &mut report,
            &mut seen,
            &mut pool,
            &mut rng,
        )?;
        report.findings.extend(finding);
        if retained > most_retained.0 {
            most_retained = (retained, input.clone());
        }
    }
    if report.retained > LEAK_BOUND {
        let path = watchdog
            .dir()
            .join(format!("leak-{:016x}", fingerprint(&most_retained.1)));
        report.findings.push(save(&path, &most_retained.1)?);
    }
    std::panic::set_hook(quiet);
    watchdog.stop()?;
    report.signatures = seen.len();
    Ok(report)
}

/// Runs one input and keeps what it taught; returns the saved input if it is a finding, and
/// the bytes the run left allocated.
fn check(
    target: Target,
    input: &[u8],
    watchdog: &Watchdog,
    report: &mut Report,
    seen: &mut HashSet<u64>,
    pool: &mut Vec<Vec<u8>>,
    rng: &mut Rng,
) -> io::Result<(Option<PathBuf>, usize)> {
    watchdog.begin(input)?;
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let began = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| target.run(input)));
    let took = began.elapsed();
    let peak = ALLOCATOR.peak_usage().saturating_sub(before);
    let retained = ALLOCATOR.current_usage().saturating_sub(before);
    watchdog.end();
    report.inputs += 1;
    report.retained += retained;
    report.slowest = report.slowest.max(took);
    if peak > report.worst_memory.0 {
        report.worst_memory = (peak, input.len());
    }
    let kind = match outcome {
        Err(_) => Some("panic"),
        Ok(_) if took > SLOW_AFTER => Some("slow"),
        Ok(_) if peak > target.memory_bound(input.len()) => Some("memory"),
        Ok(signature) => {
            if seen.insert(signature) && input.len() <= POOL_INPUT {
                if pool.len() < POOL {
                    pool.push(input.to_vec());
                } else {
                    let at = rng.below(POOL);
                    pool[at] = input.to_vec();
                }
            }
            None
        }
    };
    let finding = kind
        .map(|kind| {
            save(
                &watchdog
                    .dir()
                    .join(format!("{kind}-{:016x}", fingerprint(input))),
                input,
            )
        })
        .transpose()?;
    Ok((finding, retained))
}

fn save(path: &Path, input: &[u8]) -> io::Result<PathBuf> {
    std::fs::write(path, input)?;
    Ok(path.to_path_buf())
}

/// A name for a saved input (FNV-1a of its bytes).
fn fingerprint(input: &[u8]) -> u64 {
    input.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What running one input cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Most bytes allocated at once during the run.
    pub peak: usize,
    /// Bytes still allocated after it.
    pub retained: usize,
    /// Time taken.
    pub took: Duration,
}

/// Runs `target` once on `input` as the harness does, and what that cost.
#[must_use]
pub fn measure(target: Target, input: &[u8]) -> Cost {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let began = Instant::now();
    std::hint::black_box(target.run(input));
    Cost {
        took: began.elapsed(),
        peak: ALLOCATOR.peak_usage().saturating_sub(before),
        retained: ALLOCATOR.current_usage().saturating_sub(before),
    }
}
