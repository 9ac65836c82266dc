//! Kafka-protocol brokers for tests: librdkafka's in-process mock cluster, or a Tansu process.
//!
//! `TEST_BROKER=tansu` selects Tansu (sqlite storage in a temporary directory, a free loopback
//! port); anything else, or nothing, the mock cluster. The same test bodies run on both.
//! Neither supports Kafka transactions: never trust a transactional or `read_committed`
//! result from them. The harness installs nothing: without a Tansu binary it fails with the
//! command that installs one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// How to get the Tansu binary the tests use.
pub const TANSU_INSTALL: &str = "cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root \"$HOME/.tansu\" (or `just tansu`)";

/// A broker for one test.
pub enum TestBroker {
    /// In-process mock cluster (one broker).
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// A Tansu process.
    Tansu(Tansu),
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestBroker::Mock(_) => f.write_str("TestBroker::Mock"),
            TestBroker::Tansu(t) => write!(f, "TestBroker::Tansu({})", t.bootstrap_servers()),
        }
    }
}

impl TestBroker {
    /// The broker `TEST_BROKER` names.
    ///
    /// # Errors
    /// A message if the broker cannot be started (e.g. Tansu is not installed: it says how).
    pub async fn from_env() -> Result<Self, String> {
        match std::env::var("TEST_BROKER").as_deref() {
            Ok("tansu") => Ok(TestBroker::Tansu(Tansu::start().await?)),
            _ => TestBroker::mock(),
        }
    }

    /// A mock cluster.
    ///
    /// # Errors
    /// If librdkafka cannot create it.
    pub fn mock() -> Result<Self, String> {
        MockCluster::new(1)
            .map(TestBroker::Mock)
            .map_err(|e| format!("mock cluster: {e}"))
    }

    /// Whether this is the mock cluster.
    pub fn is_mock(&self) -> bool {
        matches!(self, TestBroker::Mock(_))
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        match self {
            TestBroker::Mock(cluster) => cluster.bootstrap_servers(),
            TestBroker::Tansu(tansu) => tansu.bootstrap_servers(),
        }
    }

    /// Creates a topic (`compacted` sets `cleanup.policy=compact`).
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        compacted: bool,
    ) -> Result<(), String> {
        match self {
            // The mock has no CreateTopics; it has its own call (and ignores topic configs).
            TestBroker::Mock(cluster) => cluster
                .create_topic(name, partitions, 1)
                .map_err(|e| e.to_string()),
            TestBroker::Tansu(tansu) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", tansu.bootstrap_servers())
                    .create()
                    .map_err(|e| e.to_string())?;
                let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                if compacted {
                    topic = topic.set("cleanup.policy", "compact");
                }
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                let results = admin
                    .create_topics([&topic], &options)
                    .await
                    .map_err(|e| e.to_string())?;
                for result in results {
                    result.map_err(|(topic, code)| format!("creating {topic}: {code}"))?;
                }
                Ok(())
            }
        }
    }
}

/// A Tansu broker process with sqlite storage, on a free loopback port.
pub struct Tansu {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    binary: PathBuf,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tansu_binary() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates = [
        std::env::var_os("TANSU_BIN").map(PathBuf::from),
        home.as_ref().map(|h| h.join(".tansu/bin/tansu")),
        home.as_ref().map(|h| h.join(".cargo/bin/tansu")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("tansu"))
                    .find(|p| p.is_file())
            })
        })
}

impl Tansu {
    /// Starts Tansu and waits until it accepts connections.
    ///
    /// # Errors
    /// If the binary is missing (the message says how to install it) or does not come up.
    pub async fn start() -> Result<Self, String> {
        let binary = tansu_binary()
            .ok_or_else(|| format!("Tansu not found; install it with: {TANSU_INSTALL}"))?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut tansu = Tansu {
            child: None,
            dir,
            port,
            binary,
        };
        tansu.spawn().await?;
        Ok(tansu)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log =
            std::fs::File::create(self.dir.path().join("tansu.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
        Err(format!(
            "Tansu did not open port {} in 5 s; its log:\n{log}",
            self.port
        ))
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts again on the same storage and port.
    ///
    /// # Errors
    /// As [`Tansu::start`].
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn().await
    }
}
