//! When each deal next needs a look from the clock: its flow facts changing windows, or its
//! open pipeline becoming stalled or overdue.
//!
//! Each deal has at most one entry, at the earliest second it may change. Records usually
//! only push that second later, which is left as it is: the deal is looked at once too early,
//! finds nothing to do and is scheduled again. So most records touch no index.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// (second, deal sequence number).
    due: BTreeSet<(i64, u64)>,
    /// Entries of deals scheduled for the first time since [`Schedule::begin_bulk`], not yet
    /// in `due`: a restore schedules every deal at once, and a tree built from sorted
    /// entries costs a sort instead of one search per entry.
    bulk: Option<Vec<(i64, u64)>>,
}

impl Schedule {
    /// Makes `seq` due at `next` if that is earlier than `due`, the second it is due at now
    /// (`i64::MAX`: not scheduled); returns the second it is due at after.
    pub fn schedule(&mut self, seq: u64, due: i64, next: i64) -> i64 {
        if next >= due {
            return due;
        }
        if due != i64::MAX {
            self.end_bulk();
            self.due.remove(&(due, seq));
        } else if let Some(bulk) = &mut self.bulk {
            bulk.push((next, seq));
            return next;
        }
        self.due.insert((next, seq));
        next
    }

    /// Collects the entries of the next `n` deals scheduled for the first time, to be indexed
    /// together when the schedule is next read or changed otherwise.
    pub fn begin_bulk(&mut self, n: usize) {
        self.end_bulk();
        self.bulk = Some(Vec::with_capacity(n));
    }

    /// Indexes the entries collected since [`Schedule::begin_bulk`].
    pub fn end_bulk(&mut self) {
        if let Some(mut bulk) = self.bulk.take() {
            bulk.extend(std::mem::take(&mut self.due));
            bulk.sort_unstable();
            self.due = bulk.into_iter().collect();
        }
    }

    /// Removes and returns the deals due at or before `t`, in time order.
    pub fn take_until(&mut self, t: i64) -> Vec<u64> {
        self.end_bulk();
        let mut out = Vec::new();
        while let Some(&(at, seq)) = self.due.first() {
            if at > t {
                break;
            }
            self.due.pop_first();
            out.push(seq);
        }
        out
    }

    /// Forgets every entry (before every deal is scheduled again).
    pub fn clear(&mut self) {
        self.bulk = None;
        self.due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deal_is_due_once_at_its_earliest_second() {
        let mut s = Schedule::default();
        let due = s.schedule(1, i64::MAX, 50);
        assert_eq!(s.schedule(1, due, 80), 50, "a later second changes nothing");
        let due = s.schedule(1, due, 20);
        assert_eq!(due, 20);
        s.schedule(2, i64::MAX, 30);
        assert_eq!(s.take_until(25), vec![1]);
        assert_eq!(
            s.take_until(60),
            vec![2],
            "the earlier entry of deal 1 was replaced"
        );
        assert!(s.take_until(i64::MAX).is_empty());
    }

    #[test]
    fn entries_collected_in_bulk_are_due_as_if_scheduled_one_by_one() {
        let entries = [(7, 40), (3, 10), (9, 10), (1, 90), (4, 25)];
        let mut one_by_one = Schedule::default();
        let mut bulk = Schedule::default();
        one_by_one.schedule(100, i64::MAX, 5);
        bulk.schedule(100, i64::MAX, 5);
        bulk.begin_bulk(entries.len());
        let mut dues = Vec::new();
        for (seq, next) in entries {
            one_by_one.schedule(seq, i64::MAX, next);
            dues.push(bulk.schedule(seq, i64::MAX, next));
        }
        assert_eq!(dues, [40, 10, 10, 90, 25]);
        // Moved earlier while still collected: indexed first, then moved.
        one_by_one.schedule(1, 90, 15);
        bulk.schedule(1, 90, 15);
        for t in [9, 10, 24, 40, i64::MAX] {
            assert_eq!(bulk.take_until(t), one_by_one.take_until(t), "due by {t}");
        }
    }
}
