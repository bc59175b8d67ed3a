//! The roster consumer. The roster is small and read whole by every instance, never committed
//! (a global table). A consumer that silently stopped fetching it would leave every rep under
//! the team it had then, with nothing on the board to say so: it is watched
//! ([`super::watch`]) and replaced by one that goes on from the same positions when it stands
//! still behind the end.

use std::collections::HashMap;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_expose::Health;

use super::watch::{Tp, Watch};
use crate::config::Settings;
use crate::events::{ConsumerReplaced, InternalEvent};
use crate::kafka::{client_config, partitions, watermarks};
use crate::Error;

/// The roster consumer of an instance, assigned every partition of the roster topic.
pub(crate) struct Roster {
    pub consumer: StreamConsumer,
    /// The end of each non-empty partition when the consumer was made: a start reads up to it.
    pub end: HashMap<i32, i64>,
    group: String,
    watch: Watch,
}

impl Roster {
    /// Creates the consumer, assigned from the start of every partition. Blocking: round
    /// trips to the broker.
    pub fn connect(settings: &Settings, group: &str) -> Result<Roster, Error> {
        let topic = &settings.topics.roster;
        let consumer = consumer(settings, group)?;
        let mut from = HashMap::new();
        let mut end = HashMap::new();
        for p in partitions(&consumer, topic)? {
            let (low, high) = watermarks(&consumer, topic, p)?;
            from.insert((topic.clone(), p), low);
            if high > low {
                end.insert(p, high);
            }
        }
        // Explicit offsets rather than `Offset::Beginning`: no offset lookup stands between
        // the assignment and the first fetch.
        assign(&consumer, &from)?;
        Ok(Roster {
            consumer,
            end,
            group: group.to_owned(),
            watch: Watch::new(settings, from)?,
        })
    }

    /// Every few seconds: shows each partition's lag, and replaces the consumer if a partition
    /// stood still behind its end for too long. Blocking: a round trip per partition.
    pub fn watch(&mut self, settings: &Settings, health: &Health) -> Result<(), Error> {
        let stalled = self.watch.check(&self.consumer, health);
        if stalled.is_empty() {
            return Ok(());
        }
        let at = self.watch.positions(&self.consumer);
        let replacement = consumer(settings, &self.group)?;
        assign(&replacement, &at)?;
        let old = std::mem::replace(&mut self.consumer, replacement);
        crate::kafka::close_aside("a stalled roster consumer", old);
        self.watch.restart_from(at);
        ConsumerReplaced {
            consumer: "roster",
            what: "the roster consumer",
            partitions: &stalled,
            stalled_for: self.watch.stalled_for(),
        }
        .emit(health);
        Ok(())
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

fn assign(c: &StreamConsumer, at: &HashMap<Tp, i64>) -> Result<(), Error> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), &o) in at {
        tpl.add_partition_offset(topic, *p, Offset::Offset(o))
            .map_err(|e| Error::kafka("assigning partitions", e))?;
    }
    c.assign(&tpl)
        .map_err(|e| Error::kafka("assigning partitions", e))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::source::watch::Stalls;

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
        let mut mock = crate::kafka::mock::Mock::new(1, &[("roster", 1)]);
        mock.settings.topics.roster = "roster".into();
        let (mock, settings) = (&mock, &mock.settings);
        let produce =
            |i: usize| async move { mock.produce("roster", None, &format!("rep-{i}")).await };
        for i in 0..3 {
            produce(i).await;
        }
        let mut roster =
            tokio::task::block_in_place(|| Roster::connect(settings, "g")).expect("roster");
        assert_eq!(roster.end, HashMap::from([(0, 3)]));
        roster.watch.check_every = Duration::ZERO;
        roster.watch.stalls = Stalls::new(Duration::from_millis(300));
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
            tokio::task::block_in_place(|| roster.watch(settings, &health)).expect("watched");
            after.extend(next(&roster.consumer).await);
        }
        assert_eq!(
            after,
            [3, 4],
            "the new consumer starts where the old one stood"
        );
        tokio::task::block_in_place(|| roster.watch(settings, &health)).expect("watched");
        assert_eq!(
            health.lag.with_label_values(&["roster", "0"]).get(),
            0,
            "caught up"
        );
    }
}
