//! Kafka I/O: topic creation, the producer and the counters behind the progress lines.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tracing::{debug, error, info, warn};

use crate::generate::{Fault, Record, Topic};

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("could not create topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Producer settings: the simulator's defaults, then the caller's `-X` properties on top.
///
/// Idempotence keeps each partition in the order produced even when a batch is retried (a
/// broker restart, a partition without a leader yet): a rep's roster changes and a deal's
/// states must arrive in the order they happened.
pub fn client_config(bootstrap: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

/// A topic the simulator writes to.
#[derive(Debug, Clone, Copy)]
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub compacted: bool,
}

/// Creates the topics that do not exist yet; the broker may not create them on first use.
pub async fn ensure_topics(
    config: &ClientConfig,
    specs: &[TopicSpec<'_>],
    replication: i32,
) -> Result<(), ProduceError> {
    let admin: AdminClient<LogContext> = config.create_with_context(LogContext)?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(s.name, s.partitions, TopicReplication::Fixed(replication));
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &opts).await? {
        match result {
            Ok(topic) => info!(%topic, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                debug!(%topic, "topic exists")
            }
            Err((topic, code)) => return Err(ProduceError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Sends librdkafka's own log lines through `tracing`, where the rest of the logs go.
#[derive(Debug, Clone, Copy)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_rdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error!(target: "librdkafka", %error, "{reason}");
    }
}

fn log_rdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(target: "librdkafka", "{fac} {message}"),
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", "{fac} {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(target: "librdkafka", "{fac} {message}")
        }
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", "{fac} {message}"),
    }
}

/// Counters shared by the generator thread, the delivery callbacks and the progress logger.
#[derive(Debug, Default)]
pub struct Stats {
    produced: [AtomicU64; 3],
    duplicates: AtomicU64,
    stale: AtomicU64,
    late: AtomicU64,
    malformed: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// A consistent-enough reading of [`Stats`] for a log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub deals: u64,
    pub activities: u64,
    pub roster: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub late: u64,
    pub malformed: u64,
    pub delivered: u64,
    pub failed: u64,
}

impl Snapshot {
    pub fn produced(&self) -> u64 {
        self.deals + self.activities + self.roster
    }
}

impl Stats {
    fn count(&self, r: &Record) {
        self.produced[r.topic.index()].fetch_add(1, Ordering::Relaxed);
        let fault = match r.fault {
            None => return,
            Some(Fault::Duplicate) => &self.duplicates,
            Some(Fault::Stale) => &self.stale,
            Some(Fault::Late) => &self.late,
            Some(Fault::Malformed(_)) => &self.malformed,
        };
        fault.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            deals: get(&self.produced[Topic::Deals.index()]),
            activities: get(&self.produced[Topic::Activities.index()]),
            roster: get(&self.produced[Topic::Roster.index()]),
            duplicates: get(&self.duplicates),
            stale: get(&self.stale),
            late: get(&self.late),
            malformed: get(&self.malformed),
            delivered: get(&self.delivered),
            failed: get(&self.failed),
        }
    }
}

/// Counts delivery reports; runs on the producer's polling thread.
#[derive(Debug)]
pub struct DeliveryContext {
    stats: Arc<Stats>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_rdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error!(target: "librdkafka", %error, "{reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                let n = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
                // A broker outage fails every queued record; a sample is enough to see it.
                if n <= 10 || n % 10_000 == 0 {
                    warn!(error = %e, failed = n, "record not delivered");
                }
            }
        }
    }
}

/// Writes records to their configured topics.
pub struct Sink {
    producer: ThreadedProducer<DeliveryContext>,
    topics: [String; 3],
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("topics", &self.topics)
            .finish()
    }
}

impl Sink {
    /// `topics` are the names of deals, activities and roster, in that order.
    pub fn new(
        config: &ClientConfig,
        topics: [String; 3],
        stats: Arc<Stats>,
    ) -> Result<Sink, ProduceError> {
        let context = DeliveryContext {
            stats: Arc::clone(&stats),
        };
        let producer = config.create_with_context(context)?;
        Ok(Sink {
            producer,
            topics,
            stats,
        })
    }

    /// Queues a record. While the local queue is full this waits for it to drain, and gives
    /// up (returning `false`) only when `stop` is raised.
    pub fn send(&self, r: &Record, stop: &AtomicBool) -> Result<bool, ProduceError> {
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: "content-type",
            value: Some(r.content_type),
        });
        let mut record = BaseRecord::to(&self.topics[r.topic.index()])
            .key(r.key.as_str())
            .payload(r.value.as_slice())
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.stats.count(r);
                    return Ok(true);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits up to `timeout` for every queued record to be delivered or to fail; returns how
    /// many are still in flight.
    pub fn flush(&self, timeout: Duration) -> i32 {
        if let Err(e) = self.producer.flush(timeout) {
            warn!(error = %e, "flush did not complete");
        }
        self.producer.in_flight_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_override_the_defaults() {
        let cfg = client_config(
            "broker:9092",
            &[
                ("linger.ms".into(), "50".into()),
                ("acks".into(), "1".into()),
            ],
        );
        assert_eq!(cfg.get("linger.ms"), Some("50"));
        assert_eq!(cfg.get("compression.type"), Some("lz4"));
        assert_eq!(cfg.get("acks"), Some("1"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("broker:9092"));
    }
}
