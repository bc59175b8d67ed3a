//! What happens inside a service, as typed events: each one writes its log line and moves its
//! metric in one place, so that the log and `/metrics` never tell different stories.

use std::collections::{BTreeMap, BTreeSet};

use salespulse_decode::DecodeError;
use salespulse_expose::Health;
use tracing::{debug, info, warn};

/// An occurrence that logs and counts.
pub(crate) trait InternalEvent {
    fn emit(self, health: &Health);
}

/// Where a record came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// An input record failed the contract and went to the dead-letter topic.
pub(crate) struct RecordRejected<'a> {
    pub source: Source<'a>,
    /// The reason's code, as in the dead letter's `reason` header.
    pub reason: &'a str,
    pub detail: &'a str,
}

impl InternalEvent for RecordRejected<'_> {
    fn emit(self, health: &Health) {
        let Source {
            topic,
            partition,
            offset,
        } = self.source;
        warn!(
            topic,
            partition,
            offset,
            reason = self.reason,
            detail = self.detail,
            "rejected record, sent to the dead-letter topic"
        );
        count_rejected(health, topic, self.reason);
    }
}

/// Rejected records by topic, and by topic and reason.
fn count_rejected(health: &Health, topic: &str, reason: &str) {
    health.events.with_label_values(&[topic, "rejected"]).inc();
    health.rejected.with_label_values(&[topic, reason]).inc();
}

/// A roster record failed the contract. The roster is read whole by every instance at every
/// start, so it has no single reader to dead-letter from: it is logged and counted.
pub(crate) struct RosterRecordRejected<'a> {
    pub source: Source<'a>,
    pub error: &'a DecodeError,
}

impl InternalEvent for RosterRecordRejected<'_> {
    fn emit(self, health: &Health) {
        let Source {
            topic,
            partition,
            offset,
        } = self.source;
        warn!(topic, partition, offset, reason = %self.error.reason, detail = %self.error.detail, "rejected roster record");
        count_rejected(health, topic, self.error.reason.code());
    }
}

/// A consumer stood still behind the end of some partitions and was replaced (the roster's,
/// by one that goes on from the same positions; the targets service's, by starting over).
pub(crate) struct ConsumerReplaced<'a> {
    /// Which consumer, as the `consumer` label of `salespulse_consumers_replaced_total`:
    /// `roster`, `input`, `group` (divided ingest's) or `targets`.
    pub consumer: &'static str,
    pub what: &'a str,
    /// (topic, partition) of each partition that stood still.
    pub partitions: &'a [(String, i32)],
    pub stalled_for: std::time::Duration,
}

impl InternalEvent for ConsumerReplaced<'_> {
    fn emit(self, health: &Health) {
        health
            .consumers_replaced
            .with_label_values(&[self.consumer])
            .inc();
        warn!(
            consumer = self.what,
            partitions = ?self.partitions,
            stalled_s = self.stalled_for.as_secs_f64(),
            "a consumer read nothing for a while although behind; replaced it"
        );
    }
}

/// The state was loaded from a snapshot at start-up.
pub(crate) struct SnapshotLoaded<'a> {
    pub bytes: usize,
    pub generation: u64,
    pub taken_at_ms: i64,
    pub positions: &'a BTreeMap<i32, i64>,
    /// Reading it from its topic, and rebuilding the state from it.
    pub read_seconds: f64,
    pub restore_seconds: f64,
}

impl InternalEvent for SnapshotLoaded<'_> {
    fn emit(self, health: &Health) {
        info!(
            bytes = self.bytes,
            generation = self.generation,
            positions = ?self.positions,
            read_seconds = self.read_seconds,
            restore_seconds = self.restore_seconds,
            "state loaded from snapshot"
        );
        health.snapshot_bytes.set(self.bytes as i64);
        health
            .snapshot_timestamp
            .set(self.taken_at_ms as f64 / 1000.0);
    }
}

/// A snapshot of the state was written.
pub(crate) struct SnapshotWritten {
    pub bytes: usize,
    pub generation: u64,
    pub taken_at_ms: i64,
    pub seconds: f64,
}

impl InternalEvent for SnapshotWritten {
    fn emit(self, health: &Health) {
        info!(
            bytes = self.bytes,
            generation = self.generation,
            seconds = self.seconds,
            "snapshot written"
        );
        health.snapshot_bytes.set(self.bytes as i64);
        health
            .snapshot_timestamp
            .set(self.taken_at_ms as f64 / 1000.0);
    }
}

/// The input below the committed offsets is replayed: the state is that of the last run.
pub(crate) struct StateRestored {
    pub records: i64,
    pub seconds: f64,
}

impl InternalEvent for StateRestored {
    fn emit(self, health: &Health) {
        if self.records > 0 {
            info!(
                records = self.records,
                seconds = self.seconds,
                "state restored"
            );
        }
        health.restore_seconds.set(self.seconds);
    }
}

/// The instance took over the series of the slots the group assigned it.
pub(crate) struct SlotsTakenOver<'a> {
    pub slots: &'a BTreeSet<i32>,
    pub leader: bool,
    pub series: usize,
    pub published: usize,
    pub steps: TakeOverSteps,
}

/// How long the waits of a take-over took.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TakeOverSteps {
    /// Until `/metrics` served the slots' series, from the instance's own state.
    pub serving: std::time::Duration,
    /// The whole take-over, up to what differs published to the metrics topic.
    pub total: std::time::Duration,
    /// Until no transaction of the slots' previous owners was undecided.
    pub previous_owners: std::time::Duration,
    /// Reading the metrics topic back.
    pub board: std::time::Duration,
    /// Taking the lead: celebrations read back, dead letters caught up.
    pub leadership: std::time::Duration,
}

impl InternalEvent for SlotsTakenOver<'_> {
    fn emit(self, health: &Health) {
        if self.slots.is_empty() {
            info!("holding no slot");
        } else {
            let s = self.steps;
            info!(
                slots = ?self.slots,
                leader = self.leader,
                series = self.series,
                published = self.published,
                serving_s = s.serving.as_secs_f64(),
                seconds = s.total.as_secs_f64(),
                previous_owners_s = s.previous_owners.as_secs_f64(),
                board_s = s.board.as_secs_f64(),
                leadership_s = s.leadership.as_secs_f64(),
                "took over the series of the assigned slots"
            );
        }
        health.owned_slots.set(self.slots.len() as i64);
        health.leader.set(i64::from(self.leader));
    }
}

/// Taking over the assigned slots failed (the broker away); retried at the next tick.
pub(crate) struct TakeOverFailed<'a> {
    pub error: &'a crate::Error,
}

impl InternalEvent for TakeOverFailed<'_> {
    fn emit(self, health: &Health) {
        warn!(error = %self.error, "taking over the assigned slots failed; retrying at the next tick");
        health.owned_slots.set(0);
        health.leader.set(0);
    }
}

/// A transaction of the instance's outputs ended.
pub(crate) struct TransactionEnded<'a> {
    /// `committed`, `aborted`, `fenced` or `wedged`.
    pub outcome: &'a str,
    pub why: Option<&'a str>,
}

impl<'a> TransactionEnded<'a> {
    /// The end of an instance whose producer cannot go on: fenced (a zombie, whose outputs
    /// were aborted) or wedged (a call that never returned; the coordinator aborts its
    /// transaction after the timeout). The instance starts over with a new producer from what
    /// is committed. `None` for any other error.
    pub fn starting_over(e: &'a crate::Error) -> Option<Self> {
        let (outcome, why) = match e {
            crate::Error::Fenced(why) => ("fenced", why),
            crate::Error::Wedged(why) => ("wedged", why),
            _ => return None,
        };
        Some(TransactionEnded {
            outcome,
            why: Some(why),
        })
    }
}

impl InternalEvent for TransactionEnded<'_> {
    fn emit(self, health: &Health) {
        match (self.outcome, self.why) {
            ("committed", _) => {}
            ("fenced", why) => warn!(why, "this instance was fenced; starting over"),
            ("wedged", why) => warn!(
                why,
                "a call of the transactional producer never returned; starting over with a new one"
            ),
            (_, why) => warn!(
                why,
                "the open transaction was aborted; taking the slots over again"
            ),
        }
        health.transactions.with_label_values(&[self.outcome]).inc();
    }
}

/// The group took every partition (or slot) of this instance away: a rebalance began.
pub(crate) struct Revoked {
    /// What the group hands out: `partition` (divided ingest) or `slot`.
    pub what: &'static str,
    /// Divided ingest: whether the state was committed as the partitions were given up, and
    /// so kept for those assigned again, and the seconds from the group's request to here.
    pub handed_back: Option<(bool, f64)>,
}

impl InternalEvent for Revoked {
    fn emit(self, health: &Health) {
        match self.handed_back {
            Some((state_kept, handing_back_s)) => {
                info!(state_kept, handing_back_s, "gave up every {}", self.what)
            }
            None => info!("gave up every {}", self.what),
        }
        health.rebalances.with_label_values(&["revoked"]).inc();
    }
}

/// The group handed this instance its share: a rebalance ended.
pub(crate) struct Assigned<'a> {
    /// Input partitions (divided ingest only).
    pub input: Option<&'a BTreeSet<i32>>,
    pub slots: &'a BTreeSet<i32>,
}

impl InternalEvent for Assigned<'_> {
    fn emit(self, health: &Health) {
        match self.input {
            Some(input) => info!(input = ?input, slots = ?self.slots, "assigned partitions"),
            None => info!(slots = ?self.slots, "assigned slots"),
        }
        health.rebalances.with_label_values(&["assigned"]).inc();
    }
}

/// A celebration or an alert was produced to its topic.
pub(crate) struct Announced<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    /// The celebration (`big_win`, `milestone`, …) or the alert's state.
    pub kind: &'a str,
}

impl InternalEvent for Announced<'_> {
    /// Counted, and logged at debug level only: a replay of a busy day announces thousands,
    /// which the count and the topic itself show better than as many log lines.
    fn emit(self, health: &Health) {
        debug!(topic = %self.topic, key = %self.key, kind = %self.kind, "announcing");
        health
            .announcements
            .with_label_values(&[self.topic, self.kind])
            .inc();
    }
}

/// A stage of a tick ran: `clock` (the windows moved), `export` (the changed series compared,
/// shown, encoded and produced) or `commit` (the acknowledgements awaited and the transaction
/// committed). Not logged: there are up to ten ticks a second.
pub(crate) struct TickStage {
    pub stage: &'static str,
    pub took: std::time::Duration,
}

impl InternalEvent for TickStage {
    fn emit(self, health: &Health) {
        health
            .tick_seconds
            .with_label_values(&[self.stage])
            .observe(self.took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salespulse_decode::Reason;

    #[test]
    fn only_a_fenced_or_wedged_producer_starts_the_instance_over_and_counts_so() {
        let h = Health::new("deals");
        let fenced = crate::Error::Fenced("epoch bumped".into());
        let wedged = crate::Error::Wedged("no answer".into());
        for (e, outcome) in [(&fenced, "fenced"), (&wedged, "wedged")] {
            let ended = TransactionEnded::starting_over(e).expect("starts over");
            assert_eq!(ended.outcome, outcome);
            ended.emit(&h);
            assert_eq!(h.transactions.with_label_values(&[outcome]).get(), 1);
        }
        let stalled = crate::Error::Stalled("input".into());
        assert!(TransactionEnded::starting_over(&stalled).is_none());
    }

    #[test]
    fn a_rejected_record_counts_under_its_topic_and_reason() {
        let h = Health::new("deals");
        let error = DecodeError {
            reason: Reason::InvalidJson,
            detail: "expected value".into(),
        };
        let source = Source {
            topic: "sales.deals",
            partition: 2,
            offset: 41,
        };
        for _ in 0..2 {
            RecordRejected {
                source,
                reason: error.reason.code(),
                detail: &error.detail,
            }
            .emit(&h);
        }
        let events = h.events.with_label_values(&["sales.deals", "rejected"]);
        assert_eq!(events.get(), 2);
        let code = Reason::InvalidJson.code();
        assert_eq!(
            h.rejected.with_label_values(&["sales.deals", code]).get(),
            2
        );
    }

    #[test]
    fn taking_over_sets_the_slot_gauges_and_a_failure_clears_them() {
        let h = Health::new("deals");
        let slots: BTreeSet<i32> = [0, 5, 9].into();
        SlotsTakenOver {
            slots: &slots,
            leader: true,
            series: 10,
            published: 3,
            steps: TakeOverSteps::default(),
        }
        .emit(&h);
        assert_eq!((h.owned_slots.get(), h.leader.get()), (3, 1));
        let error = crate::Error::Config("broker away".into());
        TakeOverFailed { error: &error }.emit(&h);
        assert_eq!((h.owned_slots.get(), h.leader.get()), (0, 0));
    }

    #[test]
    fn an_announcement_counts_under_its_topic_and_kind() {
        let h = Health::new("deals");
        Announced {
            topic: "sales.celebrations",
            key: "big_win/d-1",
            kind: "big_win",
        }
        .emit(&h);
        let counted = h
            .announcements
            .with_label_values(&["sales.celebrations", "big_win"]);
        assert_eq!(counted.get(), 1);
    }
}
