//! Kafka clients and topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaErrorCode as Code;
use rdkafka::Offset;
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
    c.set_defaults(QUICK_FIRST_CONNECTION);
    c
}

/// librdkafka connects to a broker only when a request needs one, and a consumer with a group
/// asks for its coordinator the moment it is made, before any connection is up; that first
/// attempt finds no broker and holds back the next connection for half of
/// `reconnect.backoff.ms` (100 ms by default). Every consumer made on a start (the topic
/// readers, the roster, the input) thus waited about 55 ms for its first answer, 9 ms with
/// 10 ms. The back-off still doubles on every failed attempt, up to
/// `reconnect.backoff.max.ms` (10 s): a broker that stays away is tried about ten times in
/// its first ten seconds, then every ten seconds.
const QUICK_FIRST_CONNECTION: [(&str, &str); 1] = [("reconnect.backoff.ms", "10")];

/// Client properties the project chooses but an operator may override in `kafka.properties`.
pub(crate) trait SetDefaults {
    /// Sets each property that is not set yet.
    fn set_defaults(
        &mut self,
        props: impl IntoIterator<Item = (&'static str, &'static str)>,
    ) -> &mut Self;
}

impl SetDefaults for ClientConfig {
    fn set_defaults(
        &mut self,
        props: impl IntoIterator<Item = (&'static str, &'static str)>,
    ) -> &mut Self {
        for (k, v) in props {
            if self.get(k).is_none() {
                self.set(k, v);
            }
        }
        self
    }
}

/// A topic the service needs, with how to create it when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
    /// A compacted topic's segment age in milliseconds, when not [`COMPACTED_SEGMENT_MS`].
    pub segment_ms: Option<u64>,
}

/// Segment age of the compacted topics created here (one hour).
const COMPACTED_SEGMENT_MS: u64 = 3_600_000;

/// Creates the topics that do not exist yet. Existing topics are left as they are. A cluster
/// with a broker away may time out or point at a controller that is gone: transient failures
/// are tried again with back-off for up to [`ADMIN_RETRY_LIMIT`].
pub async fn ensure_topics(s: &Settings, topics: &[TopicSpec]) -> Result<(), Error> {
    // Made only when a topic is missing: dropping an admin client waits out the poll of its
    // background thread (a tenth of a second), which every start would pay.
    let mut admin: Option<AdminClient<DefaultClientContext>> = None;
    let deadline = tokio::time::Instant::now() + ADMIN_RETRY_LIMIT;
    let mut backoff = Duration::from_millis(500);
    loop {
        // Any live broker answers metadata; creating a topic needs the controller, which a
        // client may still look for on a broker that is gone. So create only what is missing.
        let missing = match existing_topics(s).await {
            Ok(existing) => topics
                .iter()
                .filter(|t| !existing.contains(&t.name))
                .cloned()
                .collect(),
            Err(_) => topics.to_vec(),
        };
        if missing.is_empty() {
            return Ok(());
        }
        let admin = match &mut admin {
            Some(admin) => admin,
            None => admin.insert(
                client_config(s)
                    .create()
                    .map_err(|e| Error::kafka("creating the admin client", e))?,
            ),
        };
        match create_missing(s, admin, &missing).await {
            Ok(()) => return Ok(()),
            Err((context, e)) if is_transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, context, retry_in_ms = backoff.as_millis() as u64, "transient Kafka error; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err((context, source)) => return Err(Error::Kafka { context, source }),
        }
    }
}

/// How long a start-up admin operation is tried again while the cluster answers with
/// transient errors.
pub const ADMIN_RETRY_LIMIT: Duration = Duration::from_secs(120);

/// Names of the topics the cluster has, from any broker that answers.
async fn existing_topics(s: &Settings) -> Result<std::collections::HashSet<String>, Error> {
    let probe: rdkafka::consumer::BaseConsumer = client_config(s)
        .create()
        .map_err(|e| Error::kafka("creating a metadata client", e))?;
    tokio::task::spawn_blocking(move || {
        probe
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|md| md.topics().iter().map(|t| t.name().to_owned()).collect())
            .map_err(|e| Error::kafka("reading metadata", e))
    })
    .await
    .map_err(|e| Error::Config(format!("metadata probe failed: {e}")))?
}

async fn create_missing(
    s: &Settings,
    admin: &AdminClient<DefaultClientContext>,
    topics: &[TopicSpec],
) -> Result<(), (String, rdkafka::error::KafkaError)> {
    // The cleaner never compacts the active segment: rolled hourly, a compacted topic read
    // whole at start-up stays about the size of its latest values plus an hour of changes.
    let segments: Vec<String> = topics
        .iter()
        .map(|t| t.segment_ms.unwrap_or(COMPACTED_SEGMENT_MS).to_string())
        .collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&segments)
        .map(|(t, segment_ms)| {
            let nt = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(s.topics.replication_factor),
            );
            if t.compacted {
                nt.set("cleanup.policy", "compact")
                    .set("segment.ms", segment_ms)
            } else {
                nt
            }
        })
        .collect();
    // A request to a broker that is gone fails within 10 s and is tried again.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| ("creating topics".to_owned(), e))?;
    for r in results {
        match r {
            Ok(name) => info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err((
                    format!("creating topic {name}"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ))
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

/// Error codes that pass on their own while the cluster still serves: a broker that went away
/// (the others take over its partitions), a leader or controller that moved, a request that
/// timed out. librdkafka keeps retrying; a reader logs them and goes on, an admin operation is
/// tried again.
pub fn is_transient_code(code: Code) -> bool {
    matches!(
        code,
        Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::NetworkException
            | Code::LeaderNotAvailable
            | Code::NotLeaderForPartition
            | Code::RequestTimedOut
            | Code::OperationTimedOut
            | Code::Resolve
            | Code::FencedLeaderEpoch
            | Code::UnknownLeaderEpoch
            | Code::OffsetNotAvailable
            | Code::CoordinatorNotAvailable
            | Code::NotCoordinator
            | Code::CoordinatorLoadInProgress
            | Code::NotController
    )
}

/// Whether a client error is transient (see [`is_transient_code`]).
pub fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    match e {
        rdkafka::error::KafkaError::AdminOp(code) => is_transient_code(*code),
        _ => e.rdkafka_error_code().is_some_and(is_transient_code),
    }
}

/// How long a reader may go without a record before it gives up.
pub const READ_IDLE_LIMIT: Duration = Duration::from_secs(30);

/// How long a reader waits for a record before it asks for its topic's metadata again.
/// librdkafka fetches a partition again only once it knows the partition's new leader, and
/// it asks for the leaders when a broker goes away, before the cluster has moved that
/// broker's partitions (the controller waits out the broker's session, 9 s): a read under way
/// when its leader was killed got nothing more until its idle limit ended it.
const READ_STALL: Duration = Duration::from_secs(5);

/// Reads assigned partitions up to given end offsets: the one loop behind loading the roster,
/// reading a compacted topic whole and catching up on input. Transient errors (see
/// [`is_transient`]) are logged and reading goes on; a reader that gets no record for
/// [`READ_IDLE_LIMIT`] fails, naming what it read.
pub struct ReadToEnd<'c, C: rdkafka::consumer::ConsumerContext + 'static> {
    consumer: &'c rdkafka::consumer::StreamConsumer<C>,
    /// The topic read.
    what: String,
    /// Offset after which each partition is done.
    ends: std::collections::HashMap<i32, i64>,
    /// Next offset of each partition.
    pos: std::collections::HashMap<i32, i64>,
    /// Transient errors met so far.
    pub transient_errors: u64,
    /// Partitions whose last stable offset was seen past their end, and whose fetch started
    /// over after that.
    settled: std::collections::HashSet<i32>,
    /// A `read_committed` client that measures last stable offsets; on the reader's own
    /// connection the query would wait behind its fetch, up to half a second per partition.
    stable: Option<&'c rdkafka::consumer::BaseConsumer>,
}

impl<C: rdkafka::consumer::ConsumerContext + 'static> std::fmt::Debug for ReadToEnd<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadToEnd")
            .field("what", &self.what)
            .field("ends", &self.ends)
            .field("pos", &self.pos)
            .field("transient_errors", &self.transient_errors)
            .finish()
    }
}

impl<'c, C: rdkafka::consumer::ConsumerContext + 'static> ReadToEnd<'c, C> {
    /// Reads `consumer` (assigned already to partitions of topic `what`) until each partition
    /// of `ends` reaches its end; `from` gives where each partition starts (0 when absent).
    ///
    /// On a transactional topic, pass the high watermarks as ends and read `read_committed`
    /// with `enable.partition.eof`: a partition is done once the reader reached its end and
    /// its last stable offset is at the high watermark measured before, so that what every
    /// transaction open then (an instance killed mid-transaction, aborted after its timeout)
    /// holds is decided before the reader says it has read everything.
    pub fn new(
        consumer: &'c rdkafka::consumer::StreamConsumer<C>,
        what: &str,
        ends: std::collections::HashMap<i32, i64>,
        from: std::collections::HashMap<i32, i64>,
    ) -> Self {
        ReadToEnd {
            consumer,
            what: what.to_owned(),
            ends,
            pos: from,
            transient_errors: 0,
            settled: std::collections::HashSet::new(),
            stable: None,
        }
    }

    /// Measures last stable offsets with `probe` (a `read_committed` client).
    pub fn with_stable_probe(mut self, probe: &'c rdkafka::consumer::BaseConsumer) -> Self {
        self.stable = Some(probe);
        self
    }

    fn done(&self) -> bool {
        self.ends
            .iter()
            .all(|(p, end)| self.pos.get(p).copied().unwrap_or(0) >= *end)
    }

    /// The next record, or `None` once every partition reached its end.
    pub async fn next(&mut self) -> Result<Option<rdkafka::message::BorrowedMessage<'c>>, Error> {
        use rdkafka::Message as _;
        let deadline = tokio::time::Instant::now() + READ_IDLE_LIMIT;
        loop {
            if self.done() {
                return Ok(None);
            }
            let stall = deadline.min(tokio::time::Instant::now() + READ_STALL);
            let Ok(got) = tokio::time::timeout_at(stall, self.consumer.recv()).await else {
                if stall == deadline {
                    return Err(Error::Config(format!(
                        "reading {} timed out: no record for {} s",
                        self.what,
                        READ_IDLE_LIMIT.as_secs()
                    )));
                }
                // A failed request changes nothing: the next stall asks again.
                let _ = self
                    .consumer
                    .fetch_metadata(Some(&self.what), Duration::from_secs(2));
                continue;
            };
            match got {
                Ok(m) => {
                    self.pos.insert(m.partition(), m.offset() + 1);
                    return Ok(Some(m));
                }
                Err(rdkafka::error::KafkaError::PartitionEOF(p)) => self.reached_end_of(p)?,
                Err(e) if is_transient(&e) => {
                    self.transient_errors += 1;
                    tracing::warn!(error = %e, reading = %self.what, "transient Kafka error; reading on");
                }
                Err(e) => return Err(Error::kafka(&format!("reading {}", self.what), e)),
            }
        }
    }

    /// A transactional topic's last offset is often a commit marker, which is never
    /// delivered: its end is known from the consumer reaching the last stable offset, once
    /// that is past the end to read to. An end reached while a transaction was open lies
    /// before what the transaction and those after it hold, and the transaction may commit
    /// before the last stable offset is measured; so once that is past the end, the partition
    /// is fetched again from its next undelivered record, and the end that fetch reaches is
    /// past the end to read to.
    fn reached_end_of(&mut self, p: i32) -> Result<(), Error> {
        let Some(end) = self.ends.get(&p).copied() else {
            return Ok(());
        };
        if self.settled.contains(&p) {
            let at = self.pos.entry(p).or_default();
            *at = (*at).max(end);
            return Ok(());
        }
        // librdkafka's position moves past what it never hands over (commit markers, records
        // of aborted transactions) and never past the last stable offset. At or past the end,
        // every record before the end is decided and was handed over or skipped, so the end
        // is reached without measuring the last stable offset and fetching again.
        let known = self.pos.get(&p).copied().unwrap_or(0);
        let read = self.consumer.position().ok();
        if crate::source::watch::position_in(read.as_ref(), &self.what, p, known) >= end {
            self.pos.insert(p, known.max(end));
            return Ok(());
        }
        let timeout = Duration::from_secs(5);
        let stable = tokio::task::block_in_place(|| match &self.stable {
            Some(probe) => probe.fetch_watermarks(&self.what, p, timeout),
            None => self.consumer.fetch_watermarks(&self.what, p, timeout),
        });
        if matches!(stable, Ok((_, lso)) if lso >= end) {
            // Nothing delivered yet: the reader started at the beginning.
            let next = self
                .pos
                .get(&p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            // A seek discards what was fetched before it and starts a new end-of-partition.
            tokio::task::block_in_place(|| self.consumer.seek(&self.what, p, next, timeout))
                .map_err(|e| Error::kafka(&format!("reading {}", self.what), e))?;
            self.settled.insert(p);
        }
        Ok(())
    }
}

/// Drops `clients` on a thread of their own. Dropping a client waits for its threads to end
/// (about 100 ms), and dropping a group consumer closes it: the close waits for a final
/// rebalance that librdkafka can leave pending indefinitely after a fatal error
/// (confluentinc/librdkafka#4041, fede1024/rust-rdkafka#508): an instance starting over must
/// not wait for it. A close that never ends leaves the group by
/// itself once `max.poll.interval.ms` passes without a poll.
pub(crate) fn close_aside<T: Send + 'static>(what: &'static str, clients: T) {
    let spawned = std::thread::Builder::new()
        .name("close-consumer".into())
        .spawn(move || {
            let began = std::time::Instant::now();
            drop(clients);
            tracing::debug!(what, seconds = began.elapsed().as_secs_f64(), "closed");
        });
    if let Err(e) = spawned {
        tracing::warn!(what, error = %e, "no thread to close on; closed in place");
    }
}

/// A librdkafka mock cluster for focused unit tests of the Kafka toolkit (the end-to-end
/// suite runs against a real broker).
#[cfg(test)]
pub(crate) mod mock {
    use std::time::Duration;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;

    use crate::config::Settings;

    /// A mock cluster with its topics, the services' settings pointing at it, and a producer.
    pub(crate) struct Mock {
        pub cluster: MockCluster<'static, DefaultProducerContext>,
        pub settings: Settings,
        producer: FutureProducer,
    }

    impl Mock {
        /// `brokers` brokers and `topics` (name, partitions), replication factor 1.
        pub fn new(brokers: i32, topics: &[(&str, i32)]) -> Mock {
            let cluster = MockCluster::new(brokers).expect("mock cluster");
            for (topic, partitions) in topics {
                cluster.create_topic(topic, *partitions, 1).expect("topic");
            }
            let mut settings = Settings::default();
            settings.kafka.bootstrap = cluster.bootstrap_servers();
            let producer = ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .create()
                .expect("producer");
            Mock {
                cluster,
                settings,
                producer,
            }
        }

        /// Produces one record with key `key` and payload `{}`, to `partition` or the one the
        /// key hashes to, and waits for its acknowledgement.
        pub async fn produce(&self, topic: &str, partition: Option<i32>, key: &str) {
            let mut record = FutureRecord::to(topic).key(key).payload("{}");
            if let Some(p) = partition {
                record = record.partition(p);
            }
            self.producer
                .send(record, Duration::from_secs(5))
                .await
                .expect("delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;

    #[test]
    fn a_close_that_blocks_does_not_hold_up_the_caller() {
        struct BlocksOnDrop(std::sync::mpsc::Receiver<()>);
        impl Drop for BlocksOnDrop {
            fn drop(&mut self) {
                let _ = self.0.recv_timeout(Duration::from_secs(5));
            }
        }
        let (release, blocked) = std::sync::mpsc::channel();
        let began = std::time::Instant::now();
        close_aside("a client that never closes", BlocksOnDrop(blocked));
        assert!(began.elapsed() < Duration::from_secs(1));
        // Released: the thread that waits ends.
        let _ = release.send(());
    }

    #[test]
    fn transient_errors_are_told_from_fatal_ones() {
        use rdkafka::error::KafkaError;
        assert!(is_transient(&KafkaError::MessageConsumption(
            Code::BrokerTransportFailure
        )));
        assert!(is_transient(&KafkaError::MessageConsumption(
            Code::NotLeaderForPartition
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            Code::TopicAuthorizationFailed
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            Code::UnknownTopicOrPartition
        )));
        assert!(is_transient(&KafkaError::AdminOp(Code::OperationTimedOut)));
        assert!(!is_transient(&KafkaError::AdminOp(
            Code::InvalidReplicationFactor
        )));
    }

    /// Two of three brokers go down while a topic whose partitions the third leads is read to
    /// its end: the reader meets transport errors and still reads every record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_reads_on_while_brokers_are_down() {
        let topic = "reader-topic";
        let mock = super::mock::Mock::new(3, &[(topic, 3)]);
        let cluster = &mock.cluster;
        for p in 0..3 {
            cluster.partition_leader(topic, p, Some(1)).expect("leader");
        }
        for i in 0..90 {
            mock.produce(topic, Some(i % 3), &format!("k{i}")).await;
        }
        cluster.broker_down(2).expect("down");
        cluster.broker_down(3).expect("down");
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "reader")
            .set("enable.auto.commit", "false")
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "50")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let ends: HashMap<i32, i64> = (0..3).map(|p| (p, 30)).collect();
        let mut reader = ReadToEnd::new(&consumer, topic, ends, HashMap::new());
        let mut n = 0;
        while let Some(_m) = reader.next().await.expect("reads on") {
            n += 1;
        }
        println!(
            "read {n} records with two brokers down, through {} transport errors",
            reader.transient_errors
        );
        assert_eq!(n, 90);
        assert!(reader.transient_errors > 0, "the brokers were down");
    }
}
