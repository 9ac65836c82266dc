//! The services the demo runs as child processes: started in their own process group (out of
//! reach of the terminal's Ctrl-C, so the demo stops them in order) and stopped however the
//! demo ends.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use testkit::process::signal;
use testkit::services::service_binaries;

/// How long the services get to stop on Ctrl-C before they are killed.
const STOP_DEADLINE: Duration = Duration::from_millis(2_500);

/// Starts the service `name` (`app-raw` or `app-agg`), its output in `<log_dir>/<name>.log`.
pub(crate) fn spawn(name: &str, env: &[(&str, String)], log_dir: &Path) -> anyhow::Result<Child> {
    let binary = service_binaries()
        .map_err(anyhow::Error::msg)?
        .get(name)
        .with_context(|| format!("{name} is not a service"))?;
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
    Command::new(binary)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        // Out of reach of the terminal's Ctrl-C: the demo stops it, in order.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// The services the demo runs; dropping them stops them (SIGTERM to all at once, then a wait
/// up to [`STOP_DEADLINE`], then SIGKILL), however the demo ends.
pub(crate) struct Services(pub(crate) Vec<(&'static str, Child)>);

impl Services {
    /// `name exited (status)` for each service that has exited since the last call.
    pub(crate) fn exited(&mut self) -> Vec<(&'static str, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        self.0.retain_mut(|(name, child)| match child.try_wait() {
            Ok(Some(status)) => {
                exited.push((*name, status));
                false
            }
            _ => true,
        });
        exited
    }

    pub(crate) fn stop(&mut self) {
        for (_, child) in &self.0 {
            signal(child, "TERM");
        }
        let started = Instant::now();
        for (_, child) in &mut self.0 {
            while started.elapsed() < STOP_DEADLINE {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.0.clear();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}
