//! Apache Kafka for tests: KRaft nodes (broker and controller in one JVM each) started from
//! the jars `just kafka` caches, on free loopback ports, with storage in a temporary directory.
//!
//! [`KafkaCluster::start`] gives one node, [`KafkaCluster::start_nodes`] several (every node
//! votes in the controller quorum, so a cluster of three survives the loss of one). Internal
//! topics get as many replicas as there are nodes, at most three. Nodes can be killed (SIGKILL),
//! stopped (SIGTERM) and started again on the same storage and ports. Dropping the cluster kills
//! every node; if the test is panicking, the tail of each node's log is printed first and the
//! directory is kept.
//!
//! The broker is found through `KAFKA_LIBS` or the cache `just kafka` fills
//! (`$XDG_CACHE_HOME` or `~/.cache`, then `deribit-pipeline/kafka-VERSION/libs`); without it
//! starting fails with the command that fetches it, so no test can pass by skipping.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, signal};

mod cluster_id;
mod install;

use cluster_id::random_cluster_id;
pub use install::{KAFKA_FETCH, kafka_installed, kafka_libs, kafka_version};
use install::{java, java_error};

/// How long a node may take from spawn to "Kafka Server started".
const START_DEADLINE: Duration = Duration::from_secs(60);

/// JVM flags for a test broker: small heap, quick start.
const JVM_FLAGS: [&str; 6] = [
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];

/// Extra settings for every node of a cluster.
#[derive(Debug, Clone, Default)]
pub struct KafkaOptions {
    /// `key=value` lines appended to every node's `server.properties`.
    pub properties: Vec<(String, String)>,
    /// A second client listener, e.g. `SASL_SSL`; see [`ExtraListener`].
    pub extra_listener: Option<ExtraListener>,
    /// SCRAM users created when the storage is formatted, as `kafka-storage format --add-scram`
    /// arguments (see [`crate::tls::scram_user`]).
    pub scram_users: Vec<String>,
    /// Each node in its own process group, out of reach of a terminal's Ctrl-C, so that the
    /// program owning the cluster stops its clients first (the demo). Tests leave it off: a
    /// Ctrl-C on `cargo test` ends their brokers too.
    pub own_process_group: bool,
}

/// A second client listener with its own security protocol (the first is always PLAINTEXT).
#[derive(Debug, Clone)]
pub struct ExtraListener {
    /// Listener name, e.g. `SECURE`.
    pub name: String,
    /// Its security protocol, e.g. `SASL_SSL`.
    pub protocol: String,
}

/// One KRaft node.
struct Node {
    id: usize,
    port: u16,
    extra_port: Option<u16>,
    controller_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Length of the log when the node was last spawned: a restart appends to the same log.
    log_offset: usize,
}

impl Node {
    fn config(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

/// Apache Kafka nodes for one test.
pub struct KafkaCluster {
    dir: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
    libs: PathBuf,
    own_process_group: bool,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KafkaCluster({})", self.bootstrap_servers())
    }
}

impl KafkaCluster {
    /// One node (broker + controller).
    ///
    /// # Errors
    /// If the jars are missing (the message names `just kafka`) or the node does not start (the
    /// message holds its log).
    pub async fn start() -> Result<Self, String> {
        Self::start_nodes(1, KafkaOptions::default()).await
    }

    /// `count` nodes, each broker and controller, with `options` on every node.
    ///
    /// # Errors
    /// As [`KafkaCluster::start`].
    pub async fn start_nodes(count: usize, options: KafkaOptions) -> Result<Self, String> {
        let libs = kafka_libs().filter(|_| kafka_installed()).ok_or_else(|| {
            format!(
                "Apache Kafka {} is not installed; fetch it with `{KAFKA_FETCH}` \
                     (or point KAFKA_LIBS at its jars)",
                kafka_version()
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("kafka-test-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let nodes: Vec<Node> = (1..=count)
            .map(|id| Node {
                id,
                port: free_port(),
                extra_port: options.extra_listener.as_ref().map(|_| free_port()),
                controller_port: free_port(),
                dir: dir.path().join(format!("node-{id}")),
                child: None,
                log_offset: 0,
            })
            .collect();
        let mut cluster = KafkaCluster {
            dir: Some(dir),
            nodes,
            libs,
            own_process_group: options.own_process_group,
        };
        cluster.write_configs(&options)?;
        cluster.format(&options).await?;
        for index in 0..cluster.nodes.len() {
            cluster.spawn(index)?;
        }
        for index in 0..cluster.nodes.len() {
            cluster.wait_started(index).await?;
        }
        Ok(cluster)
    }

    /// `host:port,…` of every node's PLAINTEXT listener.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `host:port,…` of the extra listener, if the cluster has one.
    pub fn extra_bootstrap_servers(&self) -> Option<String> {
        let ports: Option<Vec<u16>> = self.nodes.iter().map(|n| n.extra_port).collect();
        ports.map(|ports| {
            ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The directory holding every node's storage, configuration and log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node id (1-based) whose broker listens on `port`.
    pub fn node_with_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().find(|n| n.port == port).map(|n| n.id)
    }

    /// Kills node `id` (1-based) at once, as a crash would.
    pub fn kill(&mut self, id: usize) {
        if let Some(child) = self.node_mut(id).and_then(|n| n.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(node) = self.node_mut(id) {
            node.child = None;
        }
    }

    /// Stops node `id` with SIGTERM (a controlled shutdown) and waits for it to exit.
    pub fn stop(&mut self, id: usize) {
        if let Some(mut child) = self.node_mut(id).and_then(|n| n.child.take()) {
            signal(&child, "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `id` again on its storage and ports and waits until it serves.
    ///
    /// # Errors
    /// If it does not come up (the message holds its log).
    pub async fn start_node(&mut self, id: usize) -> Result<(), String> {
        let index = id.checked_sub(1).filter(|i| *i < self.nodes.len());
        let index = index.ok_or_else(|| format!("no node {id}"))?;
        self.spawn(index)?;
        self.wait_started(index).await
    }

    /// Kills node `id` and starts it again on the same storage and ports.
    ///
    /// # Errors
    /// As [`KafkaCluster::start_node`].
    pub async fn restart(&mut self, id: usize) -> Result<(), String> {
        self.kill(id);
        self.start_node(id).await
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: usize, lines: usize) -> String {
        let Some(node) = id.checked_sub(1).and_then(|i| self.nodes.get(i)) else {
            return String::new();
        };
        let text = std::fs::read_to_string(node.log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn node_mut(&mut self, id: usize) -> Option<&mut Node> {
        id.checked_sub(1).and_then(|i| self.nodes.get_mut(i))
    }

    fn write_configs(&self, options: &KafkaOptions) -> Result<(), String> {
        let voters = self
            .nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let replicas = self.nodes.len().min(3);
        let min_isr = replicas.min(2);
        for node in &self.nodes {
            std::fs::create_dir_all(node.dir.join("data")).map_err(|e| e.to_string())?;
            let mut listeners = format!(
                "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                node.port, node.controller_port
            );
            let mut advertised = format!("PLAINTEXT://127.0.0.1:{}", node.port);
            let mut protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned();
            if let (Some(extra), Some(port)) = (&options.extra_listener, node.extra_port) {
                let _ = write!(listeners, ",{}://127.0.0.1:{port}", extra.name);
                let _ = write!(advertised, ",{}://127.0.0.1:{port}", extra.name);
                let _ = write!(protocols, ",{}:{}", extra.name, extra.protocol);
            }
            let mut text = format!(
                "process.roles=broker,controller\n\
                 node.id={id}\n\
                 listeners={listeners}\n\
                 advertised.listeners={advertised}\n\
                 listener.security.protocol.map={protocols}\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 controller.listener.names=CONTROLLER\n\
                 controller.quorum.voters={voters}\n\
                 log.dirs={data}\n\
                 num.partitions=1\n\
                 auto.create.topics.enable=false\n\
                 group.initial.rebalance.delay.ms=0\n\
                 group.min.session.timeout.ms=1000\n\
                 offsets.topic.replication.factor={replicas}\n\
                 offsets.topic.num.partitions=3\n\
                 transaction.state.log.replication.factor={replicas}\n\
                 transaction.state.log.min.isr={min_isr}\n\
                 transaction.state.log.num.partitions=3\n\
                 share.coordinator.state.topic.replication.factor={replicas}\n\
                 share.coordinator.state.topic.min.isr={min_isr}\n\
                 default.replication.factor={replicas}\n\
                 log.cleaner.backoff.ms=1000\n\
                 controlled.shutdown.enable=true\n",
                id = node.id,
                data = node.dir.join("data").display(),
            );
            for (key, value) in &options.properties {
                let _ = writeln!(text, "{key}={value}");
            }
            std::fs::write(node.config(), text).map_err(|e| e.to_string())?;
            std::fs::write(node.dir.join("log4j2.properties"), LOG4J2)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Formats every node's storage with one cluster id (all nodes in parallel: each is a JVM).
    async fn format(&self, options: &KafkaOptions) -> Result<(), String> {
        let cluster_id = random_cluster_id();
        let mut formatting = Vec::new();
        for node in &self.nodes {
            let mut command = self.java_command(node, "kafka.tools.StorageTool");
            command.args(["format", "--ignore-formatted", "-t", &cluster_id, "-c"]);
            command.arg(node.config());
            for user in &options.scram_users {
                command.args(["--add-scram", user]);
            }
            let log = std::fs::File::create(node.dir.join("format.log"))
                .map_err(|e| format!("format log: {e}"))?;
            let err = log.try_clone().map_err(|e| e.to_string())?;
            command.stdout(Stdio::from(log)).stderr(Stdio::from(err));
            let child = tokio::process::Command::from(command)
                .spawn()
                .map_err(|e| java_error(&e))?;
            formatting.push((node, child));
        }
        for (node, mut child) in formatting {
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if !status.success() {
                let log = std::fs::read_to_string(node.dir.join("format.log")).unwrap_or_default();
                return Err(format!("formatting node {} failed: {log}", node.id));
            }
        }
        Ok(())
    }

    fn java_command(&self, node: &Node, main: &str) -> Command {
        let mut command = Command::new(java());
        command
            .current_dir(&node.dir)
            .args(JVM_FLAGS)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                node.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg(main)
            .stdin(Stdio::null());
        if self.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        command
    }

    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let node = &self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log())
            .map_err(|e| format!("broker log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = self.java_command(node, "kafka.Kafka");
        command
            .arg(node.config())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        let offset = std::fs::metadata(node.log()).map_or(0, |m| m.len());
        let child = command.spawn().map_err(|e| java_error(&e))?;
        self.nodes[index].child = Some(child);
        self.nodes[index].log_offset = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(())
    }

    /// Waits until the node's log says it started since its last spawn.
    async fn wait_started(&mut self, index: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let id = self.nodes[index].id;
        loop {
            let node = &mut self.nodes[index];
            let log = std::fs::read(node.log()).unwrap_or_default();
            let since_spawn = log.get(node.log_offset..).unwrap_or_default();
            if String::from_utf8_lossy(since_spawn).contains("Kafka Server started") {
                return Ok(());
            }
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "Kafka node {id} exited ({status}) before serving; its log:\n{}",
                    self.log_tail(id, 80)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Kafka node {id} did not start in {START_DEADLINE:?}; its log:\n{}",
                    self.log_tail(id, 80)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if failing {
            for node in &self.nodes {
                eprintln!(
                    "---- Kafka node {} log (tail; whole log in {}) ----\n{}",
                    node.id,
                    node.log().display(),
                    self.log_tail(node.id, 60)
                );
            }
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
    }
}

/// Broker log: INFO to the node's log file (stdout is redirected there), noisy loggers quieter.
const LOG4J2: &str = "\
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.apache.name=org.apache.kafka
logger.apache.level=INFO
";
