//! A throwaway PostgreSQL for one test: a fresh cluster in a temporary directory, on a free
//! loopback port, with durability off (`fsync`, `synchronous_commit`, `full_page_writes`).
//!
//! The server binaries come from `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package). `initdb` and `postgres` refuse to run as root, so when the tests run as
//! root (containers, CI) both run as the `postgres` system user, else `nobody`, which then owns
//! the temporary directory. The superuser `postgres` signs in over TCP with a random password
//! (scram-sha-256); [`TestPostgres::psql`] runs SQL as it.
//!
//! The server can be stopped and started again on the same data and port. Dropping it stops the
//! server and removes the directory; if the test is panicking, the tail of the server's log is
//! printed first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, signal};

mod connect;
mod install;

use install::{Account, server_account};
pub use install::{POSTGRES_INSTALL, postgres_bin};

/// How long the server may take to accept connections, or to stop.
const DEADLINE: Duration = Duration::from_secs(30);

/// How long a dropped server may take to stop before it is killed.
const DROP_DEADLINE: Duration = Duration::from_secs(10);

/// Loopback only, and no durability: a test's data dies with the test anyway.
const SETTINGS: [&str; 5] = [
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
];

/// A password nobody guesses in a test's lifetime: the clock and the process id, in hex.
fn random_password() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}{:x}", std::process::id())
}

/// Whether `child` exits within `within`.
fn exits_within(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Variable naming a file where each test that starts a PostgreSQL appends its name (CI counts
/// the tests that ran on a real database with it).
pub const USE_LOG: &str = "TESTKIT_POSTGRES_LOG";

/// Appends the running test's name to the file [`USE_LOG`] names, if it is set.
fn note_use() {
    let Some(path) = std::env::var_os(USE_LOG) else {
        return;
    };
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        use std::io::Write as _;
        let _ = writeln!(file, "{name}");
    }
}

/// A PostgreSQL server for one test; dropping it stops the server and removes its files.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    account: Option<Account>,
    port: u16,
    password: String,
    child: Option<Child>,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TestPostgres(127.0.0.1:{}, {})",
            self.port,
            self.dir().display()
        )
    }
}

impl TestPostgres {
    /// Creates a cluster in a temporary directory, starts it on a free port and waits until it
    /// accepts connections.
    ///
    /// # Errors
    /// If the binaries are missing (the message names [`POSTGRES_INSTALL`]), `initdb` fails (the
    /// message holds its output) or the server does not accept connections within 30 s (the
    /// message holds its log).
    pub fn start() -> Result<Self, String> {
        let bin = install::server_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("postgres-test-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut postgres = Self {
            dir,
            bin,
            account: server_account()?,
            port: free_port(),
            password: random_password(),
            child: None,
        };
        postgres.init()?;
        postgres.restart()?;
        note_use();
        Ok(postgres)
    }

    /// The TCP port the server listens on (loopback only); it stays the same across restarts.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The temporary directory: the cluster in `data/`, the server's log, its Unix socket.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with a fast shutdown (SIGINT: sessions are ended, then a checkpoint).
    ///
    /// # Errors
    /// If it has not exited within 30 s (it is then killed; the message holds its log).
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(&child, "INT");
        if exits_within(&mut child, DEADLINE) {
            return Ok(());
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "PostgreSQL did not stop within {DEADLINE:?} of SIGINT and was killed; its log:\n{}",
            self.log_tail(60)
        ))
    }

    /// Starts the server again (stopping it first if it runs) on the same data and port, and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// As [`TestPostgres::stop`], or if it does not accept connections within 30 s (the message
    /// holds its log).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("PostgreSQL log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("PostgreSQL log: {e}"))?;
        let mut command = self.server_command("postgres");
        command
            .arg("-D")
            .arg(self.dir().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir());
        for setting in SETTINGS {
            command.args(["-c", setting]);
        }
        command.stdout(Stdio::from(log)).stderr(Stdio::from(err));
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.join("postgres").display()))?;
        self.child = Some(child);
        self.wait_accepting()
    }

    /// Whether the server process is alive (it may still be starting or stopping).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The last `lines` lines of the server's log (every start appends to it).
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("postgres.log")
    }

    /// A server binary, run as the server's account (when root), in the temporary directory.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .current_dir(self.dir())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some(account) = self.account {
            std::os::unix::process::CommandExt::uid(&mut command, account.uid);
            std::os::unix::process::CommandExt::gid(&mut command, account.gid);
        }
        command
    }

    /// Runs initdb: the superuser `postgres`, trusted on the Unix socket, its password on TCP.
    fn init(&self) -> Result<(), String> {
        let pwfile = self.dir().join("pwfile");
        std::fs::write(&pwfile, &self.password).map_err(|e| format!("password file: {e}"))?;
        if let Some(Account { uid, gid }) = self.account {
            for path in [self.dir(), &pwfile] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {uid}:{gid} {}: {e}", path.display()))?;
            }
        }
        let mut command = self.server_command("initdb");
        command
            .arg("-D")
            .arg(self.dir().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            // Nothing of a test's cluster needs to survive a power cut.
            .args(["-E", "UTF8", "--locale=C", "--no-sync"]);
        let output = command.output().map_err(|e| {
            let initdb = self.bin.join("initdb");
            format!("running {}: {e}{}", initdb.display(), self.reach_hint())
        })?;
        let _ = std::fs::remove_file(&pwfile);
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "initdb failed ({}):\n{}{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.reach_hint()
        ))
    }

    /// When the server runs as another account: that account must reach the directory.
    fn reach_hint(&self) -> String {
        self.account.map_or(String::new(), |a| {
            format!(
                "\n(the server runs as uid {} because this process is root; that uid must be \
                 able to reach {}: point TMPDIR at a directory it can, e.g. /tmp)",
                a.uid,
                self.dir().display()
            )
        })
    }

    /// Polls until the server accepts connections (TCP, then `pg_isready`).
    fn wait_accepting(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DEADLINE;
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
                && self.is_ready()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "PostgreSQL exited ({status}) before accepting connections; its log:\n{}",
                    self.log_tail(60)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "PostgreSQL did not accept connections within {DEADLINE:?}; its log:\n{}",
                    self.log_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        self.client("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-t", "2"])
            .env_clear()
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- PostgreSQL log (tail) ----\n{}", self.log_tail(60));
        }
        if let Some(mut child) = self.child.take() {
            signal(&child, "INT");
            if !exits_within(&mut child, DROP_DEADLINE) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
