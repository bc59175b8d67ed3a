//! When each deal next needs a look from the clock: its flow facts changing windows, or its
//! open pipeline becoming stalled or overdue.
//!
//! Each deal is due at one second, the earliest it may change. Records usually only push that
//! second later, which is left as it is: the deal is looked at once too early, finds nothing
//! to do and is scheduled again. So most records touch no index.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A due second of a deal: (second, deal sequence number).
pub(crate) type Due = (i64, u64);

/// The due seconds, earliest first.
///
/// A deal whose due second moves earlier gets a new entry; the old one stays where it is and
/// is stale from then on: the deal's own due second is the one that counts, and whoever takes
/// entries skips those that no longer match it ([`Schedule::take_until`]). Moving a deal
/// earlier is then one push onto a heap, not a removal and an insertion in an ordered tree
/// (two searches that miss the cache with many deals held). Stale entries leave when their
/// second comes, or at [`Schedule::retain`].
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    due: BinaryHeap<Reverse<Due>>,
}

impl Schedule {
    /// Makes `seq` due at `next` if that is earlier than `due`, the second it is due at now
    /// (`i64::MAX`: not scheduled); returns the second it is due at after.
    pub fn schedule(&mut self, seq: u64, due: i64, next: i64) -> i64 {
        if next >= due {
            return due;
        }
        self.due.push(Reverse((next, seq)));
        next
    }

    /// Makes room for `n` more entries (a restore schedules every deal at once).
    pub fn reserve(&mut self, n: usize) {
        self.due.reserve(n);
    }

    /// Removes and returns the entries due at or before `t`, in time order, each once. Some
    /// may be stale: an entry counts only while the deal is still due at its second.
    pub fn take_until(&mut self, t: i64) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(&Reverse(entry)) = self.due.peek() {
            if entry.0 > t {
                break;
            }
            self.due.pop();
            // A deal scheduled twice for the same second (an entry made stale, then the same
            // second again) comes out twice in a row.
            if out.last() != Some(&entry) {
                out.push(entry);
            }
        }
        out
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Keeps only the entries for which `live` is true (those still due at their second).
    pub fn retain(&mut self, mut live: impl FnMut(Due) -> bool) {
        self.due.retain(|e| live(e.0));
    }

    /// Forgets every entry (before every deal is scheduled again).
    pub fn clear(&mut self) {
        self.due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Takes what is due by `t` as the deals core does: an entry counts while its deal is
    /// still due at its second, and the deal is then no longer due.
    fn take(s: &mut Schedule, dues: &mut BTreeMap<u64, i64>, t: i64) -> Vec<u64> {
        let mut out = Vec::new();
        for (at, seq) in s.take_until(t) {
            if dues.get(&seq) == Some(&at) {
                dues.insert(seq, i64::MAX);
                out.push(seq);
            }
        }
        out
    }

    #[test]
    fn a_deal_is_due_once_at_its_earliest_second() {
        let mut s = Schedule::default();
        let mut dues = BTreeMap::new();
        let due = s.schedule(1, i64::MAX, 50);
        assert_eq!(s.schedule(1, due, 80), 50, "a later second changes nothing");
        let due = s.schedule(1, due, 20);
        assert_eq!(due, 20);
        dues.insert(1, due);
        dues.insert(2, s.schedule(2, i64::MAX, 30));
        assert_eq!(take(&mut s, &mut dues, 25), vec![1]);
        assert_eq!(
            take(&mut s, &mut dues, 60),
            vec![2],
            "the earlier entry of deal 1 was replaced"
        );
        assert!(take(&mut s, &mut dues, i64::MAX).is_empty());
        assert_eq!(s.len(), 0, "the stale entry left when its second came");
    }

    #[test]
    fn a_deal_scheduled_again_for_a_stale_second_is_taken_once() {
        let mut s = Schedule::default();
        let mut dues = BTreeMap::new();
        let due = s.schedule(1, i64::MAX, 50);
        let due = s.schedule(1, due, 30);
        dues.insert(1, due);
        assert_eq!(take(&mut s, &mut dues, 40), vec![1]);
        // Looked at, and due again at the second of its stale entry.
        dues.insert(1, s.schedule(1, i64::MAX, 50));
        assert_eq!(s.take_until(60), vec![(50, 1)], "one entry, not two");
    }

    /// Against an index that keeps exactly one entry per deal, over random schedules and takes.
    #[test]
    fn stale_entries_change_nothing_that_is_taken() {
        let mut s = Schedule::default();
        let mut dues: BTreeMap<u64, i64> = BTreeMap::new();
        let mut model: BTreeMap<u64, i64> = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut now = 0;
        for round in 0..2_000 {
            for _ in 0..20 {
                let seq = rnd(50);
                let next = now + 1 + rnd(200) as i64;
                let due = dues.get(&seq).copied().unwrap_or(i64::MAX);
                dues.insert(seq, s.schedule(seq, due, next));
                let m = model.entry(seq).or_insert(i64::MAX);
                *m = (*m).min(next);
            }
            now += 1 + rnd(30) as i64;
            let mut want: Vec<(i64, u64)> = model
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(seq, at)| (*at, *seq))
                .collect();
            want.sort_unstable();
            for (_, seq) in &want {
                model.insert(*seq, i64::MAX);
            }
            let got = take(&mut s, &mut dues, now);
            let want: Vec<u64> = want.into_iter().map(|(_, seq)| seq).collect();
            assert_eq!(got, want, "round {round}");
            if round % 100 == 0 {
                s.retain(|(at, seq)| dues.get(&seq) == Some(&at));
                assert!(s.len() <= 50);
            }
        }
    }
}
