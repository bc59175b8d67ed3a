//! A watch on long-lived assigned consumers (the roster's, the targets service's). librdkafka
//! can leave an assigned partition without fetches after a broker restart
//! (confluentinc/librdkafka#5153, fede1024/rust-rdkafka#597): such a consumer reports no error
//! and hands over nothing more, and what it feeds freezes without a sign. So every few seconds
//! each partition's position is measured against its last stable offset (shown as
//! `salespulse_consumer_lag`), and a partition that stands at one position behind its end for
//! long enough, while its end can be read, is reported: its owner replaces the consumer.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_expose::Health;

use super::end_probe;
use crate::config::Settings;
use crate::Error;

/// How often positions are measured against the ends.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long a partition may stand still behind its end before it counts as stalled. The
/// watched topics are read as they are written: a consumer that reads nothing of a partition
/// for this long while the broker answers and the partition has records for it is stuck.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(15);

/// A topic partition.
pub(crate) type Tp = (String, i32);

/// Measures an assigned consumer's partitions against their ends.
pub(crate) struct Watch {
    /// Where each partition was assigned from: its position until a record is read there.
    from: HashMap<Tp, i64>,
    /// A `read_committed` client: the ends it reads are the last stable offsets.
    probe: BaseConsumer,
    pub(crate) check_every: Duration,
    pub(crate) stalls: Stalls<Tp>,
    checked: Instant,
}

impl Watch {
    /// Watches the partitions of `from`, assigned from the offsets it gives.
    pub fn new(settings: &Settings, from: HashMap<Tp, i64>) -> Result<Watch, Error> {
        Ok(Watch {
            from,
            probe: end_probe(settings)?,
            check_every: CHECK_EVERY,
            stalls: Stalls::new(STALL_AFTER),
            checked: Instant::now(),
        })
    }

    /// How long a partition stood still before it was reported.
    pub fn stalled_for(&self) -> Duration {
        self.stalls.after
    }

    /// Every few seconds: sets each partition's lag, and returns the partitions that stood
    /// still behind their end for too long (empty between rounds). A partition whose end
    /// cannot be read (the broker away) is left out of that round. Blocking: a round trip per
    /// partition.
    pub fn check(&mut self, consumer: &StreamConsumer, health: &Health) -> Vec<Tp> {
        if self.checked.elapsed() < self.check_every {
            return Vec::new();
        }
        self.checked = Instant::now();
        let mut measured = Vec::new();
        for ((topic, p), pos) in self.positions(consumer) {
            if let Ok((_, end)) = self
                .probe
                .fetch_watermarks(&topic, p, Duration::from_secs(2))
            {
                health
                    .lag
                    .with_label_values(&[&topic, &p.to_string()])
                    .set((end - pos).max(0));
                measured.push(((topic, p), pos, end));
            }
        }
        self.stalls.check(Instant::now(), measured)
    }

    /// The next offset to read in each partition: the consumer's position, which moves past
    /// the commit markers it never hands over, or where the partition was assigned from.
    pub fn positions(&self, consumer: &StreamConsumer) -> HashMap<Tp, i64> {
        let read = consumer.position().ok();
        self.from
            .iter()
            .map(|((topic, p), &from)| {
                let pos = position_in(read.as_ref(), topic, *p, from);
                ((topic.clone(), *p), pos)
            })
            .collect()
    }

    /// After the consumer was replaced by one assigned at `at`.
    pub fn restart_from(&mut self, at: HashMap<Tp, i64>) {
        self.from = at;
    }
}

/// The next offset to read in partition `p` of `topic` by a consumer's positions `read`, at
/// least `known`. A consumer's position moves past the commit markers it never hands over;
/// it has none in a partition it has read nothing from yet.
pub(crate) fn position_in(
    read: Option<&TopicPartitionList>,
    topic: &str,
    p: i32,
    known: i64,
) -> i64 {
    read.and_then(|l| l.find_partition(topic, p))
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .map_or(known, |o| o.max(known))
}

/// Partitions that stand still behind their end.
#[derive(Debug)]
pub(crate) struct Stalls<K> {
    after: Duration,
    /// Partition -> the position it stood at, and since when, while behind its end.
    seen: HashMap<K, (i64, Instant)>,
    /// When the last round was measured.
    last: Option<Instant>,
}

impl<K: Hash + Eq + Ord + Clone> Stalls<K> {
    pub fn new(after: Duration) -> Stalls<K> {
        Stalls {
            after,
            seen: HashMap::new(),
            last: None,
        }
    }

    /// Takes the position and end of partitions measured at `now`; returns those that have
    /// been behind their end at one position for `after` or longer, each at most once per
    /// `after`. A partition not measured starts over: while its end cannot be read (the
    /// broker away), standing still says nothing about the consumer.
    pub fn check(
        &mut self,
        now: Instant,
        measured: impl IntoIterator<Item = (K, i64, i64)>,
    ) -> Vec<K> {
        // Rounds a whole period apart say that the measuring loop stood still (the process
        // was paused, a rebuild ran), not the consumer: every partition starts over.
        if self
            .last
            .is_some_and(|last| now.duration_since(last) >= self.after)
        {
            self.seen.clear();
        }
        self.last = Some(now);
        let mut stalled = Vec::new();
        let mut seen = HashMap::with_capacity(self.seen.len());
        for (p, pos, end) in measured {
            let was = self.seen.remove(&p);
            if pos >= end {
                continue;
            }
            match was {
                Some((at, since)) if at == pos && now.duration_since(since) >= self.after => {
                    seen.insert(p.clone(), (pos, now));
                    stalled.push(p);
                }
                Some((at, since)) if at == pos => {
                    seen.insert(p, (at, since));
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

    /// The lag and the stall check read librdkafka's position, which a rebuild of divided
    /// ingest moves back with a seek: the position must not stay ahead of the seek.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seek_moves_the_position_back() {
        use rdkafka::consumer::Consumer;
        use rdkafka::message::Message;

        let mock = crate::kafka::mock::Mock::new(1, &[("t", 1)]);
        for i in 0..5 {
            mock.produce("t", Some(0), &i.to_string()).await;
        }
        let consumer: StreamConsumer = crate::kafka::client_config(&mock.settings)
            .set("group.id", "g")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(0))
            .expect("partition");
        consumer.assign(&tpl).expect("assigned");
        let next = |c: &StreamConsumer| {
            let read = c.position().ok();
            position_in(read.as_ref(), "t", 0, 0)
        };
        let mut last = -1;
        while last < 4 {
            let m = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
                .await
                .expect("a record in time")
                .expect("a record");
            last = m.offset();
        }
        assert_eq!(next(&consumer), 5);
        let mut back = TopicPartitionList::new();
        back.add_partition_offset("t", 0, Offset::Offset(2))
            .expect("partition");
        tokio::task::block_in_place(|| consumer.seek_partitions(back, Duration::from_secs(5)))
            .expect("sought");
        // librdkafka has no position for it until it hands a record over again: the
        // applied offset stands.
        let after = next(&consumer);
        assert!(after <= 2, "the position stayed ahead of the seek: {after}");
        let m = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
            .await
            .expect("a record in time")
            .expect("a record");
        assert_eq!((m.offset(), next(&consumer)), (2, 3));
    }

    #[test]
    fn rounds_a_period_apart_start_over() {
        let t0 = Instant::now();
        let mut s = Stalls::new(AFTER);
        s.check(secs(t0, 0), [(0, 3, 4)]);
        // The process stood still (SIGSTOP) between two rounds: its consumer did not.
        assert!(s.check(secs(t0, 16), [(0, 3, 4)]).is_empty());
        assert!(s.check(secs(t0, 26), [(0, 3, 4)]).is_empty());
        assert_eq!(s.check(secs(t0, 31), [(0, 3, 4)]), vec![0]);
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
