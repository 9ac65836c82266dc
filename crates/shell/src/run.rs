//! Start-up and exit of a service: settings and telemetry validated, the runtime built,
//! telemetry installed, the service run, spans flushed, the exit code chosen.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use telemetry::{TelemetryConfig, init};

/// Exit code for configuration the service refuses (the one line on stderr says why).
pub const EXIT_BAD_CONFIG: u8 = 2;

/// Exit code for an instance another one took over (Kafka fenced its transactional producer):
/// restarting it as it is would only fence the other, so supervisors should tell it apart.
pub const EXIT_FENCED: u8 = 3;

/// Runs `serve(settings)` as a service: the settings and the telemetry variables validated
/// first (one line and exit code 2 if not), a multi-threaded runtime (the OTLP exporter must
/// never wait on a blocked lone worker), telemetry installed inside it, spans flushed at the end
/// while the runtime still exists. The error of `serve` is logged and gives exit code 1.
pub fn run_service<S, E, F, Fut, R>(
    service: &'static str,
    settings: Result<S, E>,
    serve: F,
) -> ExitCode
where
    E: Display,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Result<(), R>>,
    R: Display,
{
    run_service_with(service, settings, serve, |_| 1)
}

/// As [`run_service`], with the exit code for an error of `serve` chosen by `exit_code`.
pub fn run_service_with<S, E, F, Fut, R>(
    service: &'static str,
    settings: Result<S, E>,
    serve: F,
    exit_code: impl FnOnce(&R) -> u8,
) -> ExitCode
where
    E: Display,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Result<(), R>>,
    R: Display,
{
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => return refuse(service, &e),
    };
    let telemetry_config = match TelemetryConfig::from_env() {
        Ok(config) => config,
        Err(e) => return refuse(service, &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{service}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _runtime = runtime.enter();
        match init(service, &telemetry_config) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("{service}: cannot start telemetry: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let outcome = runtime.block_on(serve(settings));
    if let Err(reason) = &outcome {
        // `{:#}` shows an anyhow error's causes; other errors ignore the flag.
        tracing::error!(error = format!("{reason:#}"), "{service} stopped.");
    }
    {
        let _runtime = runtime.enter();
        telemetry.shutdown();
    }
    match &outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => ExitCode::from(exit_code(reason)),
    }
}

/// Refuses to start: one line on stderr, exit code [`EXIT_BAD_CONFIG`].
pub(crate) fn refuse(service: &str, reason: &dyn Display) -> ExitCode {
    eprintln!("{service}: invalid configuration: {reason}");
    ExitCode::from(EXIT_BAD_CONFIG)
}
