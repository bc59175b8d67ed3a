//! A start's board before the state is restored. Restoring a snapshot and replaying the
//! records after it takes a while (half a second for 1,000,000 records of state); the slots
//! are assigned and the metrics topic is read sooner. Meanwhile the board serves the owned
//! slots' series as the metrics topic holds them: the numbers as of the last commit, which are
//! those the restored state reaches at the committed offsets. The first take-over then brings
//! the board to the state.

use std::collections::BTreeSet;

use salespulse_aggregate::Differ;
use salespulse_expose::Board;

use super::ownership::{slot_of, Ownership};
use crate::sink::gate::Gate;
use crate::source::follow;

/// What a start's board was filled with: the generation of the slots it is for, and the
/// series it shows.
pub(crate) type Shown = (u64, Differ);

/// Shared by the thread that joins the slots group, the task that reads the metrics topic,
/// and the start, which closes it when the restore ends.
#[derive(Clone)]
pub(crate) struct EarlyBoard(Gate<Early>);

#[derive(Default)]
struct Early {
    /// The slots assigned while restoring: (slots, their generation, slot count).
    slots: Option<(BTreeSet<i32>, u64, i32)>,
    /// What the board was filled with, for slots of which generation.
    shown: Option<Shown>,
}

impl EarlyBoard {
    pub fn open() -> EarlyBoard {
        EarlyBoard(Gate::open())
    }

    /// The group assigned `slots` (of `count`) as generation `generation`.
    pub fn assigned(&self, slots: BTreeSet<i32>, generation: u64, count: i32) {
        self.0.with(|e| e.slots = Some((slots, generation, count)));
    }

    /// Fills the board from the metrics topic as read, for the assigned slots if they are
    /// still assigned. Returns `false` while the slots are not known (try again).
    pub fn fill(&self, read: &follow::Board, ownership: &Ownership, board: &Board) -> bool {
        self.0
            .with(|e| {
                if e.shown.is_some() {
                    return true;
                }
                let Some((slots, generation, count)) = &e.slots else {
                    return false;
                };
                let mut shown = Differ::default();
                let changes = shown.diff(read.series_of(|x| slots.contains(&slot_of(x, *count))));
                if ownership.if_current(*generation, || board.apply(&changes)) {
                    e.shown = Some((*generation, shown));
                }
                true
            })
            .unwrap_or(true)
    }

    /// Whether the board may still be filled.
    pub fn is_open(&self) -> bool {
        self.0.is_open()
    }

    /// Ends the filling (the restore is done): what the board was filled with, if it was.
    pub fn close(&self) -> Option<Shown> {
        self.0.close().shown
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rust_decimal::Decimal;
    use salespulse_aggregate::{series_key, Change, Metric, Scope, Series, Subject, Window};
    use salespulse_publish::PublishFormat;

    use super::*;
    use crate::config::Settings;
    use crate::source::follow::Follow;

    /// A metrics topic read back holding one bookings series per team.
    fn read(teams: &[&str]) -> follow::Board {
        let mut read = follow::Board::new(&Settings::default(), &Metric::DEALS);
        for t in teams {
            let s = Series {
                scope: Scope::Team,
                metric: Metric::Bookings,
                rep: None,
                team: Some(Arc::from(*t)),
                region: None,
                window: Some(Window::Qtd),
                extra: Default::default(),
                value: Decimal::new(1234, 2),
                name: None,
            };
            let change = Change {
                key: series_key(&s),
                series: Some(s),
            };
            let payload =
                salespulse_publish::encode(&change, PublishFormat::Json, chrono::Utc::now());
            read.record(&change.key, payload.as_deref());
        }
        read
    }

    fn board() -> Board {
        Board::new(salespulse_expose::Exposed::default())
    }

    fn slot(team: &str) -> i32 {
        slot_of(&Subject::Team(Arc::from(team)), 12)
    }

    #[test]
    fn the_board_serves_the_assigned_slots_series_once_both_are_known() {
        let teams = ["t1", "t2", "t3", "t4", "t5", "t6"];
        let read = read(&teams);
        let (ownership, board, early) = (Ownership::default(), board(), EarlyBoard::open());
        assert!(!early.fill(&read, &ownership, &board), "no slots yet");
        let mine = BTreeSet::from([slot("t1")]);
        ownership.assign(mine.clone(), None);
        let (slots, generation) = ownership.current();
        early.assigned(slots, generation, 12);
        assert!(early.fill(&read, &ownership, &board));
        let want = teams.iter().filter(|t| mine.contains(&slot(t))).count();
        assert!(want >= 1);
        assert_eq!(board.len(), want, "only the owned slots' series");
        let (g, shown) = early.close().expect("filled");
        assert_eq!((g, shown.series()), (generation, want));
        // Closed: a later read fills nothing.
        board.clear();
        assert!(early.fill(&read, &ownership, &board));
        assert!(board.is_empty());
    }

    #[test]
    fn slots_revoked_since_they_were_assigned_are_not_served() {
        let read = read(&["t1", "t2"]);
        let (ownership, board, early) = (Ownership::default(), board(), EarlyBoard::open());
        ownership.assign(BTreeSet::from_iter(0..12), None);
        let (slots, generation) = ownership.current();
        early.assigned(slots, generation, 12);
        ownership.revoke();
        assert!(early.fill(&read, &ownership, &board));
        assert!(
            board.is_empty(),
            "served slots the instance no longer holds"
        );
        assert!(early.close().is_none());
    }

    #[test]
    fn a_restore_that_ended_first_leaves_the_board_to_the_take_over() {
        let read = read(&["t1"]);
        let (ownership, board, early) = (Ownership::default(), board(), EarlyBoard::open());
        assert!(early.close().is_none());
        ownership.assign(BTreeSet::from_iter(0..12), None);
        let (slots, generation) = ownership.current();
        early.assigned(slots, generation, 12);
        assert!(early.fill(&read, &ownership, &board));
        assert!(board.is_empty());
    }
}
