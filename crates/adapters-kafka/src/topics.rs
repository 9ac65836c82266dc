//! The topics a service needs, checked with the admin API before it starts, and created when
//! allowed (`KAFKA_CREATE_TOPICS=true`).
//!
//! Checked: each topic exists; one that must be partitioned like another has as many
//! partitions (app-agg keeps source partition p's state in changelog partition p); one that
//! must be compacted has `cleanup.policy` with `compact`. A broker that does not answer
//! DescribeConfigs in time (librdkafka's mock cluster) gets a warning for the compaction check,
//! not a refusal. Missing topics are created with broker-default replication.
//!
//! A compacted topic (app-agg's changelog) is created with [`COMPACTED_SEGMENT_BYTES`]: a
//! restore reads every state written since the last compaction, and the segment being written
//! is never compacted, so small segments keep what a restart reads small (with Kafka's default,
//! 1 GiB, the changelog grows for hours before the first compaction). An existing compacted one
//! with segments over four times that is accepted with a warning that says so.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::{info, warn};

use crate::client_log::{ClientLog, await_metadata};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// How long to wait for a broker to list the topics.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the broker may take to describe topic configs before the check is skipped.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `segment.bytes` of a compacted topic created here (16 MiB; see the module docs).
pub const COMPACTED_SEGMENT_BYTES: u64 = 16 << 20;

/// One topic a service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions when created (if not [`TopicSpec::partitioned_like`]).
    pub partitions: i32,
    /// Must have exactly as many partitions as this topic.
    pub partitioned_like: Option<String>,
    /// Must be compacted (`cleanup.policy=compact`).
    pub compacted: bool,
}

impl TopicSpec {
    /// A plain topic created with `partitions` partitions.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            partitioned_like: None,
            compacted: false,
        }
    }

    /// A compacted topic partitioned like `other`.
    pub fn compacted_like(name: impl Into<String>, other: impl Into<String>) -> Self {
        TopicSpec {
            name: name.into(),
            partitions: 0,
            partitioned_like: Some(other.into()),
            compacted: true,
        }
    }

    fn how_to_create(&self) -> String {
        let mut how = match &self.partitioned_like {
            Some(other) => format!("with as many partitions as {other}"),
            None => format!("with {} partitions", self.partitions),
        };
        if self.compacted {
            how.push_str(&format!(
                ", cleanup.policy=compact, segment.bytes={COMPACTED_SEGMENT_BYTES}"
            ));
        }
        how
    }
}

/// Checks `specs` in order (a topic another is partitioned like comes first), creating missing
/// ones when `create` is set.
///
/// # Errors
/// [`Error::Topic`] naming the topic and the fix; [`Error::Kafka`] if the broker cannot be asked.
pub async fn ensure(config: &KafkaConfig, specs: &[TopicSpec], create: bool) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .admin()
        .create()
        .map_err(|e| Error::Kafka(format!("creating the admin client: {e}")))?;
    let mut partitions = partition_counts(config).await?;
    for spec in specs {
        let want = match &spec.partitioned_like {
            Some(other) => partitions.get(other).copied(),
            None => Some(spec.partitions),
        };
        match (partitions.get(&spec.name).copied(), want) {
            (Some(have), Some(want)) if spec.partitioned_like.is_some() && have != want => {
                return Err(Error::Topic {
                    topic: spec.name.clone(),
                    reason: format!(
                        "has {have} partitions, {} has {want}; they must match",
                        spec.partitioned_like.as_deref().unwrap_or_default()
                    ),
                });
            }
            (Some(_), _) => {}
            (None, Some(want)) if create => {
                create_topic(&admin, spec, want).await?;
                partitions.insert(spec.name.clone(), want);
                continue;
            }
            (None, _) => {
                return Err(Error::Topic {
                    topic: spec.name.clone(),
                    reason: format!(
                        "does not exist; create it ({}) or set KAFKA_CREATE_TOPICS=true",
                        spec.how_to_create()
                    ),
                });
            }
        }
        if spec.compacted {
            check_compacted(&admin, &spec.name).await?;
        }
    }
    Ok(())
}

/// Partitions per existing topic (metadata is a blocking call: off the async workers).
async fn partition_counts(config: &KafkaConfig) -> Result<HashMap<String, i32>> {
    let reader = config.reader();
    tokio::task::spawn_blocking(move || {
        let log = ClientLog::default();
        let client: BaseConsumer<ClientLog> = reader
            .create_with_context(log.clone())
            .map_err(|e| Error::Kafka(format!("creating a metadata client: {e}")))?;
        // Polling serves the error callbacks that tell a refused login from silence.
        let serve = || {
            let _ = client.poll(Duration::ZERO);
        };
        let metadata = await_metadata(client.client(), serve, &log, None, METADATA_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let count = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
                (t.name().to_owned(), count)
            })
            .collect())
    })
    .await
    .map_err(|e| Error::Kafka(format!("metadata task: {e}")))?
}

async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    spec: &TopicSpec,
    partitions: i32,
) -> Result<()> {
    let segment_bytes = COMPACTED_SEGMENT_BYTES.to_string();
    let mut topic = NewTopic::new(&spec.name, partitions, TopicReplication::Fixed(-1));
    if spec.compacted {
        topic = topic
            .set("cleanup.policy", "compact")
            .set("segment.bytes", &segment_bytes);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| Error::Kafka(format!("creating topic {}: {e}", spec.name)))?;
    for result in results {
        if let Err((topic, code)) = result {
            return Err(Error::Topic {
                topic,
                reason: format!("cannot be created: {code}"),
            });
        }
    }
    info!(topic = %spec.name, partitions, compacted = spec.compacted, "Topic created.");
    Ok(())
}

async fn check_compacted(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<()> {
    let options = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await;
    let (policy, segment_bytes) = match described.as_ref().map(|all| all.first()) {
        Ok(Some(Ok(resource))) => {
            let value = |name| resource.get(name).and_then(|entry| entry.value.clone());
            (value("cleanup.policy"), value("segment.bytes"))
        }
        other => {
            warn!(topic, answer = ?other.map(|_| ()), "The broker did not describe the topic's configuration; cannot check that it is compacted.");
            return Ok(());
        }
    };
    match policy {
        Some(policy) if policy.split(',').any(|p| p.trim() == "compact") => {}
        policy => {
            return Err(Error::Topic {
                topic: topic.to_owned(),
                reason: format!(
                    "is not compacted (cleanup.policy={}); set cleanup.policy=compact",
                    policy.unwrap_or_else(|| "unknown".to_owned())
                ),
            });
        }
    }
    if let Some(bytes) = segment_bytes.and_then(|v| v.parse::<u64>().ok())
        && bytes > 4 * COMPACTED_SEGMENT_BYTES
    {
        warn!(
            topic,
            segment_bytes = bytes,
            suggested = COMPACTED_SEGMENT_BYTES,
            "The topic's segments are large: a restore reads every state written since the last compaction and Kafka never compacts the segment it is writing, so restarts slow down as it grows; set segment.bytes={COMPACTED_SEGMENT_BYTES}."
        );
    }
    Ok(())
}
