//! An instance's role: what it may write, given how far it has restored and which slots it
//! has taken over. Pure, so that every transition is tested without a broker.
//!
//! - **Restoring**: replaying input below the committed offsets; it writes nothing.
//! - **Handing over**: the slots group assigned a generation of slots this instance has not
//!   taken over yet (or its take-over failed and is retried at the next tick); it writes
//!   nothing, and does not lead.
//! - **Running**: it exports the series of the slots it took over; the leader also commits
//!   offsets, writes snapshots, dead letters and celebrations.

/// What an instance is doing at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Restoring,
    HandingOver,
    Running { leader: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    restoring: bool,
    /// Generation of the slots taken over last; 0 before any (the slots group's first
    /// assignment is generation 1).
    taken: u64,
    leader: bool,
}

impl Role {
    pub fn new(restoring: bool) -> Role {
        Role {
            restoring,
            taken: 0,
            leader: false,
        }
    }

    /// The phase while the slots group's current generation is `generation`.
    pub fn phase(&self, generation: u64) -> Phase {
        if self.restoring {
            Phase::Restoring
        } else if self.taken != generation {
            Phase::HandingOver
        } else {
            Phase::Running {
                leader: self.leader,
            }
        }
    }

    pub fn is_restoring(&self) -> bool {
        self.restoring
    }

    /// The replay below the committed offsets is done.
    pub fn restored(&mut self) {
        self.restoring = false;
    }

    /// Whether the slots of `generation` are still to be taken over.
    pub fn must_take_over(&self, generation: u64) -> bool {
        self.phase(generation) == Phase::HandingOver
    }

    /// A take-over starts: nothing is led until it completes.
    pub fn begin_take_over(&mut self) {
        self.leader = false;
    }

    /// The slots of `generation` are taken over; `leads` when they include the leader slot.
    pub fn took_over(&mut self, generation: u64, leads: bool) {
        self.taken = generation;
        self.leader = leads;
    }

    /// The open transaction was aborted: the slots are taken over again at the next tick,
    /// leadership included (its dead letters and celebrations are redone).
    pub fn abandon(&mut self) {
        self.taken = 0;
        self.leader = false;
    }

    /// Whether this instance leads now: commits offsets, writes snapshots, dead letters and
    /// celebrations. A leader keeps leading while it gives up its slots, so that it can commit
    /// what it processed in the rebalance callback.
    pub fn leads(&self) -> bool {
        self.leader
    }

    /// Whether changed series go out for the slots of `generation`.
    pub fn exports(&self, generation: u64) -> bool {
        matches!(self.phase(generation), Phase::Running { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restoring_instance_writes_nothing_and_takes_nothing_over() {
        let r = Role::new(true);
        for generation in [0, 1, 7] {
            assert_eq!(r.phase(generation), Phase::Restoring);
            assert!(!r.exports(generation));
            assert!(!r.must_take_over(generation));
        }
        assert!(!r.leads());
    }

    #[test]
    fn after_restoring_the_assigned_slots_are_taken_over_before_anything_is_exported() {
        let mut r = Role::new(true);
        r.restored();
        // No assignment yet: nothing to take over, and nothing owned to export.
        assert_eq!(r.phase(0), Phase::Running { leader: false });
        assert_eq!(r.phase(1), Phase::HandingOver);
        assert!(r.must_take_over(1));
        assert!(!r.exports(1));
        r.begin_take_over();
        r.took_over(1, true);
        assert_eq!(r.phase(1), Phase::Running { leader: true });
        assert!(r.exports(1) && r.leads());
    }

    #[test]
    fn a_new_generation_stops_exports_and_leadership_until_it_is_taken_over() {
        let mut r = Role::new(false);
        r.took_over(1, true);
        // The group moved on: the old slots are no longer exported, but the leader still
        // leads until its take-over begins (it commits in the revocation callback).
        assert_eq!(r.phase(2), Phase::HandingOver);
        assert!(!r.exports(2) && r.leads());
        r.begin_take_over();
        assert!(!r.leads());
        r.took_over(2, false);
        assert_eq!(r.phase(2), Phase::Running { leader: false });
    }

    #[test]
    fn a_failed_take_over_is_retried_and_leads_nothing_meanwhile() {
        let mut r = Role::new(false);
        r.took_over(3, true);
        r.begin_take_over();
        // Failed: no `took_over`.
        assert!(r.must_take_over(4));
        assert!(!r.leads() && !r.exports(4));
        r.begin_take_over();
        r.took_over(4, true);
        assert!(!r.must_take_over(4) && r.exports(4) && r.leads());
    }
}
