//! The roster consumer, and a watch on it. The roster is small and read whole by every
//! instance, never committed (a global table): a consumer that silently stopped fetching it
//! would leave every rep under the team it had when the consumer stopped, with nothing on the
//! board or in the lag to say so. librdkafka can leave an assigned partition without fetches
//! after a broker restart (confluentinc/librdkafka#5153, fede1024/rust-rdkafka#597); so each
//! roster partition's position is compared with its end every few seconds, shown as lag,
//! and a consumer that stands still behind the end is replaced by a new one that goes on
//! from the same position.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_expose::Health;

use super::end_probe;
use crate::config::Settings;
use crate::events::{InternalEvent, RosterConsumerReplaced};
use crate::kafka::{client_config, partitions, watermarks};
use crate::Error;

/// How often the roster's positions are measured against its ends.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long a partition may stand still behind its end before its consumer is replaced. A
/// roster partition holds a few records a rep: a consumer that reads none of them for this
/// long while the broker answers is not slow but stuck.
const STALL_AFTER: Duration = Duration::from_secs(15);

/// The roster consumer of an instance, assigned every partition of the roster topic.
pub(crate) struct Roster {
    pub consumer: StreamConsumer,
    /// The end of each non-empty partition when the consumer was made: a start reads up to it.
    pub end: HashMap<i32, i64>,
    topic: String,
    group: String,
    /// Where each partition was assigned from: its position until a record is read there.
    from: HashMap<i32, i64>,
    probe: BaseConsumer,
    check_every: Duration,
    stalls: Stalls,
    checked: Instant,
}

impl Roster {
    /// Creates the consumer, assigned from the start of every partition. Blocking: round
    /// trips to the broker.
    pub fn connect(settings: &Settings, group: &str) -> Result<Roster, Error> {
        let topic = settings.topics.roster.clone();
        let consumer = consumer(settings, group)?;
        let mut from = HashMap::new();
        let mut end = HashMap::new();
        for p in partitions(&consumer, &topic)? {
            let (low, high) = watermarks(&consumer, &topic, p)?;
            from.insert(p, low);
            if high > low {
                end.insert(p, high);
            }
        }
        // Explicit offsets rather than `Offset::Beginning`: no offset lookup stands between
        // the assignment and the first fetch.
        assign(&consumer, &topic, &from)?;
        Ok(Roster {
            consumer,
            end,
            group: group.to_owned(),
            from,
            probe: end_probe(settings)?,
            check_every: CHECK_EVERY,
            stalls: Stalls::new(STALL_AFTER),
            checked: Instant::now(),
            topic,
        })
    }

    /// Every few seconds: shows each partition's lag and replaces the consumer if a partition
    /// stood still behind its end for too long. A partition whose end cannot be measured (the
    /// broker away) is left out of that round. Blocking: a round trip per partition.
    pub fn watch(&mut self, settings: &Settings, health: &Health) -> Result<(), Error> {
        if self.checked.elapsed() < self.check_every {
            return Ok(());
        }
        self.checked = Instant::now();
        let at = self.positions();
        let mut measured = Vec::new();
        for (&p, &pos) in &at {
            if let Ok((_, end)) =
                self.probe
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(2))
            {
                health
                    .lag
                    .with_label_values(&[&self.topic, &p.to_string()])
                    .set((end - pos).max(0));
                measured.push((p, pos, end));
            }
        }
        let stalled = self.stalls.check(Instant::now(), measured);
        if stalled.is_empty() {
            return Ok(());
        }
        let replacement = consumer(settings, &self.group)?;
        assign(&replacement, &self.topic, &at)?;
        let old = std::mem::replace(&mut self.consumer, replacement);
        crate::kafka::close_aside("a stalled roster consumer", old);
        self.from = at;
        RosterConsumerReplaced {
            topic: &self.topic,
            partitions: &stalled,
            stalled_for: self.stalls.after,
        }
        .emit(health);
        Ok(())
    }

    /// The next offset to read in each partition.
    fn positions(&self) -> HashMap<i32, i64> {
        let read = self.consumer.position().ok();
        self.from
            .iter()
            .map(|(&p, &from)| {
                let pos = read
                    .as_ref()
                    .and_then(|l| l.find_partition(&self.topic, p))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .map_or(from, |o| o.max(from));
                (p, pos)
            })
            .collect()
    }
}

fn consumer(settings: &Settings, group: &str) -> Result<StreamConsumer, Error> {
    client_config(settings)
        .set("group.id", format!("{group}-roster"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Should its position ever be out of range, the table is read again from its start
        // (upserts are idempotent) rather than from its end.
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| Error::kafka("creating the roster consumer", e))
}

fn assign(c: &StreamConsumer, topic: &str, at: &HashMap<i32, i64>) -> Result<(), Error> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in at {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .map_err(|e| Error::kafka("assigning partitions", e))?;
    }
    c.assign(&tpl)
        .map_err(|e| Error::kafka("assigning partitions", e))
}

/// Partitions that stand still behind their end.
#[derive(Debug)]
pub(crate) struct Stalls {
    after: Duration,
    /// Partition -> the position it stood at, and since when, while behind its end.
    seen: HashMap<i32, (i64, Instant)>,
}

impl Stalls {
    pub fn new(after: Duration) -> Stalls {
        Stalls {
            after,
            seen: HashMap::new(),
        }
    }

    /// Takes the position and end of partitions measured at `now`; returns those that have
    /// been behind their end at one position for `after` or longer, each at most once per
    /// `after`. A partition not measured starts over: while its end cannot be read (the
    /// broker away), standing still says nothing about the consumer.
    pub fn check(
        &mut self,
        now: Instant,
        measured: impl IntoIterator<Item = (i32, i64, i64)>,
    ) -> Vec<i32> {
        let mut stalled = Vec::new();
        let mut seen = HashMap::with_capacity(self.seen.len());
        for (p, pos, end) in measured {
            if let Some(s) = self.seen.remove(&p) {
                seen.insert(p, s);
            }

            if pos >= end {
                seen.remove(&p);
                continue;
            }
            match seen.get_mut(&p) {
                Some((at, since)) if *at == pos => {
                    if now.duration_since(*since) >= self.after {
                        stalled.push(p);
                        *since = now;
                    }
                }
                _ => {
                    seen.insert(p, (pos, now));
                }
            }
        }
        self.seen = seen;
        stalled.sort_unstable();
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(15);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    /// The offset of the next record, if one comes within a moment.
    async fn next(c: &StreamConsumer) -> Option<i64> {
        use rdkafka::message::Message;
        tokio::time::timeout(Duration::from_millis(200), c.recv())
            .await
            .ok()
            .map(|m| m.expect("a record").offset())
    }

    /// A consumer that stops fetching, as librdkafka can leave one after a broker restart
    /// (here: paused), is replaced by one that reads on from where it stood.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_that_stands_still_is_replaced_and_reads_on_from_where_it_stood() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{FutureProducer, FutureRecord};
        use rdkafka::ClientConfig;

        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("roster", 1, 1).expect("topic");
        let mut settings = Settings::default();
        settings.kafka.bootstrap = cluster.bootstrap_servers();
        settings.topics.roster = "roster".into();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("producer");
        let produce = |i: usize| {
            let key = format!("rep-{i}");
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to("roster").key(&key).payload("{}"),
                        Duration::from_secs(5),
                    )
                    .await
                    .expect("delivered");
            }
        };
        for i in 0..3 {
            produce(i).await;
        }
        let mut roster =
            tokio::task::block_in_place(|| Roster::connect(&settings, "g")).expect("roster");
        assert_eq!(roster.end, HashMap::from([(0, 3)]));
        roster.check_every = Duration::ZERO;
        roster.stalls = Stalls::new(Duration::from_millis(300));
        let mut read = Vec::new();
        while read.len() < 3 {
            read.extend(next(&roster.consumer).await);
        }
        assert_eq!(read, [0, 1, 2]);

        let assigned = roster.consumer.assignment().expect("assignment");
        roster.consumer.pause(&assigned).expect("paused");
        for i in 3..5 {
            produce(i).await;
        }
        let health = Health::new("test");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut after = Vec::new();
        while after.len() < 2 {
            assert!(Instant::now() < deadline, "never read on; read {after:?}");
            tokio::task::block_in_place(|| roster.watch(&settings, &health)).expect("watched");
            after.extend(next(&roster.consumer).await);
        }
        assert_eq!(
            after,
            [3, 4],
            "the new consumer starts where the old one stood"
        );
        tokio::task::block_in_place(|| roster.watch(&settings, &health)).expect("watched");
        assert_eq!(
            health.lag.with_label_values(&["roster", "0"]).get(),
            0,
            "caught up"
        );
    }

    #[test]
    fn a_partition_behind_at_one_position_stalls_once_per_period() {
        let t0 = Instant::now();
        let mut s = Stalls::new(AFTER);
        assert!(s.check(secs(t0, 0), [(0, 10, 20)]).is_empty());
        assert!(s.check(secs(t0, 14), [(0, 10, 20)]).is_empty());
        assert_eq!(s.check(secs(t0, 15), [(0, 10, 20)]), vec![0]);
        // Reported again only a whole period later.
        assert!(s.check(secs(t0, 20), [(0, 10, 25)]).is_empty());
        assert_eq!(s.check(secs(t0, 30), [(0, 10, 25)]), vec![0]);
    }

    #[test]
    fn progress_or_reaching_the_end_starts_over() {
        let t0 = Instant::now();
        let mut s = Stalls::new(AFTER);
        s.check(secs(t0, 0), [(0, 10, 20), (1, 5, 9)]);
        // Partition 0 moved on; partition 1 caught up.
        assert!(s.check(secs(t0, 10), [(0, 11, 20), (1, 9, 9)]).is_empty());
        assert!(s.check(secs(t0, 20), [(0, 11, 20), (1, 9, 12)]).is_empty());
        assert_eq!(s.check(secs(t0, 25), [(0, 11, 20), (1, 9, 12)]), vec![0]);
        assert_eq!(s.check(secs(t0, 35), [(0, 20, 20), (1, 9, 12)]), vec![1]);
    }

    #[test]
    fn a_partition_at_its_end_never_stalls() {
        let t0 = Instant::now();
        let mut s = Stalls::new(AFTER);
        for t in 0..10 {
            assert!(s.check(secs(t0, t * 10), [(0, 7, 7), (1, 0, 0)]).is_empty());
        }
    }

    #[test]
    fn an_unmeasured_partition_starts_over() {
        let t0 = Instant::now();
        let mut s = Stalls::new(AFTER);
        s.check(secs(t0, 0), [(0, 3, 4), (1, 3, 4)]);
        // The broker away: partition 1's end could not be read.
        assert!(s.check(secs(t0, 10), [(0, 3, 4)]).is_empty());
        assert_eq!(s.check(secs(t0, 16), [(0, 3, 4), (1, 3, 4)]), vec![0]);
        assert!(s.check(secs(t0, 30), [(0, 3, 4), (1, 3, 4)]).is_empty());
        assert_eq!(s.check(secs(t0, 31), [(0, 3, 4), (1, 3, 4)]), vec![0, 1]);
    }
}
