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
}

impl Schedule {
    /// Makes `seq` due at `next` if that is earlier than `due`, the second it is due at now
    /// (`i64::MAX`: not scheduled); returns the second it is due at after.
    pub fn schedule(&mut self, seq: u64, due: i64, next: i64) -> i64 {
        if next >= due {
            return due;
        }
        if due != i64::MAX {
            self.due.remove(&(due, seq));
        }
        self.due.insert((next, seq));
        next
    }

    /// Removes and returns the deals due at or before `t`, in time order.
    pub fn take_until(&mut self, t: i64) -> Vec<u64> {
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
}
