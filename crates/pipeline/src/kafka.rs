//! Kafka clients and topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaErrorCode as Code;
use tracing::info;

use crate::config::Settings;
use crate::Error;

/// A client config with the bootstrap servers and every pass-through property.
pub fn client_config(s: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.kafka.bootstrap);
    for (k, v) in &s.kafka.properties {
        c.set(k, v);
    }
    c
}

/// A topic the service needs, with how to create it when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

/// Creates the topics that do not exist yet. Existing topics are left as they are.
pub async fn ensure_topics(s: &Settings, topics: &[TopicSpec]) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = client_config(s)
        .create()
        .map_err(|e| Error::kafka("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let nt = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(s.topics.replication_factor),
            );
            if t.compacted {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| Error::kafka("creating topics", e))?;
    for r in results {
        match r {
            Ok(name) => info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Kafka {
                    context: format!("creating topic {name}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(())
}

/// Waits until the cluster answers a metadata request, retrying with back-off (1 s doubling to
/// 30 s) and logging each failure. Returns false if `stop` resolves first.
pub async fn wait_for_cluster<F: std::future::Future<Output = ()> + Unpin>(
    s: &Settings,
    stop: &mut F,
) -> Result<bool, Error> {
    let probe: rdkafka::consumer::BaseConsumer = client_config(s)
        .create()
        .map_err(|e| Error::kafka("creating a metadata client", e))?;
    let probe = std::sync::Arc::new(probe);
    let mut backoff = Duration::from_secs(1);
    loop {
        let p = probe.clone();
        let res = tokio::task::spawn_blocking(move || {
            p.fetch_metadata(None, Duration::from_secs(2)).map(|_| ())
        })
        .await;
        match res {
            Ok(Ok(())) => return Ok(true),
            Ok(Err(e)) => {
                // librdkafka reports why (refused, authentication failed, ...) on the client's
                // own queue, not in the metadata error: drain it for the log line.
                let mut cause = None;
                for _ in 0..16 {
                    match probe.poll(Duration::ZERO) {
                        Some(Err(err)) => cause = Some(err.to_string()),
                        Some(Ok(_)) => {}
                        None => break,
                    }
                }
                let cause = cause.unwrap_or_else(|| e.to_string());
                if cause.contains("uthentication") {
                    tracing::error!(
                        bootstrap = %s.kafka.bootstrap,
                        cause = %cause,
                        retry_in_s = backoff.as_secs(),
                        "Kafka authentication failed: check sasl.username and sasl.password; not ready, retrying"
                    );
                } else {
                    tracing::warn!(
                        bootstrap = %s.kafka.bootstrap,
                        cause = %cause,
                        retry_in_s = backoff.as_secs(),
                        "Kafka unavailable; not ready, retrying"
                    );
                }
            }
            Err(e) => return Err(Error::Config(format!("metadata probe failed: {e}"))),
        }
        tokio::select! {
            _ = &mut *stop => return Ok(false),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Partition ids of a topic, waiting (bounded) for the broker to know it.
pub fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
) -> Result<Vec<i32>, Error> {
    let mut last = None;
    for _ in 0..30 {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    if t.error().is_none() && !t.partitions().is_empty() {
                        return Ok(t.partitions().iter().map(|p| p.id()).collect());
                    }
                    last = t.error().map(|e| format!("{:?}", Code::from(e)));
                }
            }
            Err(e) => last = Some(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(Error::Config(format!(
        "topic {topic} has no partitions after 15 s ({})",
        last.unwrap_or_default()
    )))
}

/// Low and high watermarks of a partition. A topic created a moment ago may have no leader
/// yet, so errors are retried for up to 15 s before they count.
pub fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok(w) => return Ok(w),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(Error::kafka("reading watermarks", e))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// The offsets a consumer's group has committed. A broker that has just started may not have
/// a group coordinator yet, so errors are retried for up to 30 s before they count.
pub fn committed_offsets<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    tpl: &rdkafka::TopicPartitionList,
) -> Result<rdkafka::TopicPartitionList, Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => return Ok(c),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(Error::kafka("reading committed offsets", e))
            }
            Err(e) => {
                tracing::info!(error = %e, "group coordinator not ready; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
