//! Who exports which series when several instances of a service run in one group.
//!
//! Every instance reads all of its input and holds the whole state, so any instance can
//! compute any number; what is divided is who exports it. The owners are decided by Kafka's
//! group protocol over the partitions ("slots") of a small topic: each subject (a rep, a team)
//! hashes to a slot, and the instance assigned that slot puts the subject's series on
//! `/metrics` and on `sales.metrics`. Slot 0 also carries the duties that must happen once per
//! deployment: the org's series, dead letters, celebrations, the input offsets and the
//! snapshots. A single instance is assigned every slot.
//!
//! Hand-over is exact because the assignment protocol is eager: every member gives up all its
//! slots (and stops exporting them) before any member is given new ones. What a member
//! produced since its last commit is aborted right after it gave its slots up, and until then
//! a new owner reading the topic back waits for that transaction to be decided. Each
//! transaction commits under the group metadata of the assignment it exports for, which fences
//! a member the group has moved on from (`crate::sink::transaction`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use salespulse_aggregate::Subject;
use salespulse_expose::{Board, Health};

use crate::config::Settings;
use crate::events::{Assigned, InternalEvent, Revoked};
use crate::kafka::client_config;
use crate::Error;

/// The slot of the deployment-wide duties.
pub(crate) const LEADER_SLOT: i32 = 0;

/// The slot a subject belongs to (see [`salespulse_aggregate::slot_of`]): the org's and the
/// regions' series go with the deployment-wide duties.
pub(crate) fn slot_of(subject: &Subject, slots: i32) -> i32 {
    // `slots` is at least 1 (checked with the configuration), so both conversions hold.
    salespulse_aggregate::slot_of(subject, slots.max(1) as u32) as i32
}

/// The slots group's generation and member id as of an assignment: transactions commit under
/// it, so that the broker refuses them once the group has moved on.
#[derive(Clone)]
pub(crate) struct Member(pub Arc<ConsumerGroupMetadata>);

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Member")
    }
}

#[derive(Debug, Default)]
struct State {
    slots: BTreeSet<i32>,
    member: Option<Member>,
    /// The slots were given up since the loop last looked: its open transaction must be
    /// aborted.
    given_up: bool,
    /// Bumped at every change of `slots`.
    generation: u64,
    assigned: bool,
    /// Since when an assignment is due: from joining the group or from a revocation until the
    /// next assignment (which may be empty).
    awaiting_since: Option<Instant>,
    /// The instance started over with a member of its own: this one's callbacks, as its
    /// consumer closes aside, must not clear the board the next instance serves.
    retired: bool,
}

/// The slots this instance holds, shared between the rebalance callbacks and the loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ownership(Arc<Mutex<State>>);

impl Ownership {
    /// Owned slots and their generation.
    pub fn current(&self) -> (BTreeSet<i32>, u64) {
        self.0
            .lock()
            .map(|s| (s.slots.clone(), s.generation))
            .unwrap_or_default()
    }

    /// The group metadata of the current assignment.
    pub fn member(&self) -> Option<Member> {
        self.0.lock().ok().and_then(|s| s.member.clone())
    }

    /// Whether the slots were given up since the last call.
    pub fn take_given_up(&self) -> bool {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut s.given_up))
            .unwrap_or(false)
    }

    /// Whether the group has assigned this instance its slots at least once.
    pub fn assigned(&self) -> bool {
        self.0.lock().map(|s| s.assigned).unwrap_or(false)
    }

    /// How long an assignment has been due, if one is.
    pub fn awaited(&self) -> Option<Duration> {
        self.0
            .lock()
            .ok()
            .and_then(|s| s.awaiting_since.map(|t| t.elapsed()))
    }

    /// A member has just joined the group: an assignment is due from now.
    pub fn awaiting(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.awaiting_since = Some(Instant::now());
        }
    }

    /// Runs `f` if the slots are still those of generation `generation`, with the
    /// assignment held meanwhile: a revocation, which clears the board after it bumps the
    /// generation, then comes after `f`. Returns whether `f` ran.
    pub fn if_current(&self, generation: u64, f: impl FnOnce()) -> bool {
        let Ok(s) = self.0.lock() else {
            return false;
        };
        if s.generation != generation || s.retired {
            return false;
        }
        f();
        true
    }

    /// Leaves the board to the instance that starts over after this one.
    pub fn retire(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.retired = true;
        }
    }

    fn retired(&self) -> bool {
        self.0.lock().map(|s| s.retired).unwrap_or(false)
    }

    pub(crate) fn revoke(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.slots = BTreeSet::new();
            s.member = None;
            s.given_up = true;
            s.generation += 1;
            s.awaiting_since = Some(Instant::now());
        }
    }

    pub(crate) fn assign(&self, slots: BTreeSet<i32>, member: Option<Member>) {
        if let Ok(mut s) = self.0.lock() {
            s.slots = slots;
            s.member = member;
            s.generation += 1;
            s.assigned = true;
            s.awaiting_since = None;
        }
    }
}

/// The group member's callbacks: stop exporting before giving slots up, take new ones after.
pub(crate) struct SlotsContext {
    pub ownership: Ownership,
    pub board: Arc<Board>,
    pub health: Health,
}

impl std::fmt::Debug for SlotsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotsContext")
            .field("ownership", &self.ownership)
            .finish_non_exhaustive()
    }
}

impl ClientContext for SlotsContext {}

impl ConsumerContext for SlotsContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            if self.ownership.retired() {
                return;
            }
            // Nothing this instance exported may outlive its slots: the loop aborts its open
            // transaction as soon as this returns. Not here: with its coordinator away an
            // abort can take many seconds, and the whole group's rebalance would wait for it.
            self.ownership.revoke();
            self.board.clear();
            Revoked {
                what: "slot",
                handed_back: None,
            }
            .emit(&self.health);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if self.ownership.retired() {
                return;
            }
            let slots: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            Assigned {
                input: None,
                slots: &slots,
            }
            .emit(&self.health);
            let member = consumer.group_metadata().map(|m| Member(Arc::new(m)));
            self.ownership.assign(slots, member);
        }
    }
}

/// Joins `group` on the slots topic with a fresh member whose callbacks are `context`'s.
/// The broker names the member `<client_id>-<uuid>` (`client_id` is librdkafka's default,
/// `rdkafka`, when `None`), and the assignor hands slot 0 to the member first in that order.
pub(crate) fn join(
    settings: &Settings,
    group: &str,
    context: SlotsContext,
    client_id: Option<&str>,
) -> Result<BaseConsumer<SlotsContext>, Error> {
    let mut c = client_config(settings);
    if let Some(id) = client_id {
        c.set("client.id", id);
    }
    c.set("group.id", group)
        // Eager: every member gives up its slots before any is handed out again.
        .set("partition.assignment.strategy", "roundrobin")
        .set("enable.auto.commit", "false");
    if c.get("session.timeout.ms").is_none() {
        // A killed instance's slots move on after this long.
        c.set("session.timeout.ms", "10000");
    }
    if c.get("max.poll.interval.ms").is_none() {
        // Also the rebalance timeout: how long the group waits for a live member to rejoin
        // before it goes on without it. Librdkafka heartbeats from its own thread, so a
        // member whose loop is blocked (on a broker that is away) is not timed out by its
        // session; after this long it leaves, and joins again when its loop comes back.
        c.set("max.poll.interval.ms", "30000");
    }
    let ownership = context.ownership.clone();
    let consumer: BaseConsumer<SlotsContext> = c
        .create_with_context(context)
        .map_err(|e| Error::kafka("creating the slots consumer", e))?;
    consumer
        .subscribe(&[&settings.topics.slots])
        .map_err(|e| Error::kafka("joining the slots group", e))?;
    ownership.awaiting();
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_is_due_from_joining_or_revocation_until_it_comes() {
        let o = Ownership::default();
        assert!(o.awaited().is_none());
        o.awaiting();
        assert!(o.awaited().is_some());
        assert!(!o.assigned());
        o.assign(BTreeSet::from([0, 1]), None);
        assert!(o.awaited().is_none());
        assert!(o.assigned());
        o.revoke();
        assert!(o.awaited().is_some());
        assert!(o.current().0.is_empty());
        assert!(o.take_given_up(), "a revocation dooms the open transaction");
        assert!(!o.take_given_up(), "once");
        // An empty assignment is an assignment: nothing is due any more.
        o.assign(BTreeSet::new(), None);
        assert!(o.awaited().is_none());
        assert_eq!(o.current().1, 3, "every change bumps the generation");
    }
}
