//! How often the loop ticks. A tick moves the windows and emits the changed series, so its
//! interval is how late a number can be on the board; but a tick costs time in proportion to
//! the cells held and the series changed, taken from ingestion. The pacer ticks as often as
//! `publish.min_interval_ms` while ticks are cheap, and spaces them out, up to
//! `publish.interval_ms`, so that ticking takes at most the share of the loop's time that
//! records leave it: half of it while records take little of the loop (a service that keeps
//! up with time to spare spends it on a fresher board), down to a fifth as records take more
//! (ingestion keeps the rest, with a fifth of the loop to spare for bursts).
//!
//! While the service is behind its input (by more than `service.ready_max_lag` records), the
//! next tick waits `publish.catch_up_interval_ms`. A series changes once per tick however many
//! records moved it, so while a backlog is worked off most of a tick's output would be values
//! that are out of date as soon as they are published; fewer ticks leave more of the loop to
//! the backlog. The stretch costs a short backlog nothing: once every input partition has been
//! read to its end, the loop ticks at once instead of waiting out the stretched interval, and
//! the ticks after it are paced as above again.

use std::time::{Duration, Instant};

/// Share of the loop's time ticks may take however busy records keep it.
const BUDGET: f64 = 0.2;
/// Share of the loop's time ticks may take at most, when records take little of it.
const SPARE_BUDGET: f64 = 0.5;
/// Share of the loop's time kept from ticks beyond what records took, for their bursts.
const HEADROOM: f64 = 0.2;
/// Weight of the newest tick in the running cost (the rest is the history).
const SMOOTHING: f64 = 0.3;

#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    min: Duration,
    max: Duration,
    catch_up: Duration,
    /// Running (exponentially weighted) cost of a tick, in seconds.
    cost: f64,
    /// Running share of the loop's time that records took between ticks.
    records_share: f64,
    /// Time the loop spent on records since the last tick.
    records: Duration,
    /// When the last tick was recorded.
    last: Option<Instant>,
    /// The stretched interval while behind the input.
    stretched: Option<Duration>,
}

impl Pacer {
    /// As the `publish` settings give it.
    pub fn of(p: &crate::config::PublishSettings) -> Pacer {
        let ms = Duration::from_millis;
        Pacer::new(
            ms(p.min_interval_ms),
            ms(p.interval_ms),
            ms(p.catch_up_interval_ms),
        )
    }

    pub fn new(min: Duration, max: Duration, catch_up: Duration) -> Pacer {
        Pacer {
            min: min.min(max),
            max,
            catch_up: catch_up.max(max),
            cost: 0.0,
            records_share: 0.0,
            records: Duration::ZERO,
            last: None,
            stretched: None,
        }
    }

    /// Counts time the loop spent on records.
    pub fn worked(&mut self, on_records: Duration) {
        self.records += on_records;
    }

    /// Takes the tick that just ran into account: its cost, and whether the input was behind
    /// during the interval before it.
    pub fn record(&mut self, took: Duration, behind: bool) {
        self.record_at(Instant::now(), took, behind);
    }

    /// [`Pacer::record`] of a tick that ended at `now`.
    fn record_at(&mut self, now: Instant, took: Duration, behind: bool) {
        if let Some(span) = self.last.map(|t| now.saturating_duration_since(t)) {
            if !span.is_zero() {
                let share = (self.records.as_secs_f64() / span.as_secs_f64()).min(1.0);
                self.records_share = SMOOTHING * share + (1.0 - SMOOTHING) * self.records_share;
            }
        }
        self.records = Duration::ZERO;
        self.last = Some(now);
        self.cost = SMOOTHING * took.as_secs_f64() + (1.0 - SMOOTHING) * self.cost;
        // Straight to the catch-up interval rather than growing towards it: the end of the
        // backlog brings the next tick forward anyway, and each tick on the way would publish
        // every series the backlog touched.
        self.stretched = behind.then(|| self.catch_up.max(self.paced()));
    }

    /// Whether ticks are spaced out for a backlog.
    pub fn stretched(&self) -> bool {
        self.stretched.is_some()
    }

    /// Time from the end of one tick to the start of the next.
    pub fn interval(&self) -> Duration {
        self.stretched.unwrap_or_else(|| self.paced())
    }

    fn paced(&self) -> Duration {
        let wanted = Duration::from_secs_f64(self.cost / self.budget());
        wanted.clamp(self.min, self.max)
    }

    /// The share of the loop's time ticks may take: what records leave, less the headroom.
    fn budget(&self) -> f64 {
        (1.0 - HEADROOM - self.records_share).clamp(BUDGET, SPARE_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// Records take most of the loop: ticks get a fifth of it.
    const BUSY: f64 = 0.7;
    /// Records take little of the loop.
    const SPARE: f64 = 0.05;

    /// A loop on a clock of its own: each tick costs `cost` and follows the interval paced
    /// before it; records took `share` of the time from the last tick to the end of this one.
    struct Loop {
        p: Pacer,
        now: Instant,
    }

    impl Loop {
        fn new(min: Duration, max: Duration, catch_up: Duration) -> Loop {
            Loop {
                p: Pacer::new(min, max, catch_up),
                now: Instant::now(),
            }
        }

        fn tick(&mut self, cost: Duration, share: f64, behind: bool) -> Duration {
            let span = self.p.interval() + cost;
            self.p.worked(span.mul_f64(share));
            self.now += span;
            self.p.record_at(self.now, cost, behind);
            self.p.interval()
        }

        fn ticks(&mut self, n: usize, cost: Duration, share: f64) -> Duration {
            for _ in 1..n {
                self.tick(cost, share, false);
            }
            self.tick(cost, share, false)
        }
    }

    #[test]
    fn cheap_ticks_come_at_the_shortest_interval() {
        let mut l = Loop::new(100 * MS, 1000 * MS, 1000 * MS);
        assert_eq!(l.p.interval(), 100 * MS);
        assert_eq!(l.ticks(50, 2 * MS, BUSY), 100 * MS);
        assert_eq!(l.ticks(50, 2 * MS, SPARE), 100 * MS);
    }

    #[test]
    fn costly_ticks_of_a_busy_loop_are_spaced_to_a_fifth_of_the_time_and_no_further_than_the_longest(
    ) {
        let mut l = Loop::new(100 * MS, 1000 * MS, 1000 * MS);
        let i = l.ticks(50, 40 * MS, BUSY);
        assert!(i > 190 * MS && i <= 200 * MS, "{i:?}");
        assert_eq!(l.ticks(50, 350 * MS, BUSY), 1000 * MS);
        // Cheap again: back to the shortest interval within a few ticks.
        assert_eq!(l.ticks(20, MS, BUSY), 100 * MS);
    }

    #[test]
    fn a_loop_with_time_to_spare_gives_ticks_up_to_half_of_it() {
        let mut l = Loop::new(100 * MS, 1000 * MS, 1000 * MS);
        // 40 ms a tick: a fifth would space ticks 200 ms apart, half keeps the shortest.
        assert_eq!(l.ticks(50, 40 * MS, SPARE), 100 * MS);
        let i = l.ticks(50, 100 * MS, SPARE);
        assert!(i > 190 * MS && i <= 200 * MS, "{i:?}");
        // Records taking 40 % of the loop leave ticks 40 %.
        let i = l.ticks(80, 100 * MS, 0.4);
        assert!(i > 240 * MS && i <= 260 * MS, "{i:?}");
        // As records come to take most of it, ticks are spaced to a fifth again.
        let i = l.ticks(80, 40 * MS, BUSY);
        assert!(i > 190 * MS && i <= 200 * MS, "{i:?}");
    }

    #[test]
    fn one_slow_tick_does_not_stall_the_board() {
        let mut l = Loop::new(100 * MS, 1000 * MS, 1000 * MS);
        assert!(l.tick(200 * MS, BUSY, false) <= 1000 * MS);
        l.tick(MS, BUSY, false);
        assert!(l.tick(MS, BUSY, false) < 1000 * MS);
    }

    #[test]
    fn equal_bounds_tick_at_a_fixed_interval() {
        let mut l = Loop::new(1000 * MS, 1000 * MS, 1000 * MS);
        assert_eq!(l.tick(Duration::ZERO, SPARE, false), 1000 * MS);
        assert_eq!(l.tick(5000 * MS, BUSY, false), 1000 * MS);
    }

    #[test]
    fn behind_the_input_ticks_stretch_to_the_catch_up_interval_and_come_back() {
        let mut l = Loop::new(100 * MS, 1000 * MS, 5000 * MS);
        assert_eq!(l.tick(MS, BUSY, false), 100 * MS);
        for _ in 0..3 {
            assert_eq!(l.tick(MS, 1.0, true), 5000 * MS);
        }
        assert!(l.p.stretched());
        // Caught up: paced by the cost of a tick again at once.
        assert_eq!(l.tick(MS, BUSY, false), 100 * MS);
        assert!(!l.p.stretched());
    }

    #[test]
    fn behind_never_ticks_more_often_than_paced() {
        let mut l = Loop::new(100 * MS, 1000 * MS, 5000 * MS);
        assert_eq!(l.ticks(50, 350 * MS, BUSY), 1000 * MS);
        assert_eq!(l.tick(350 * MS, 1.0, true), 5000 * MS);
        // A catch-up interval below the longest paced one is raised to it.
        let mut q = Loop::new(100 * MS, 1000 * MS, 500 * MS);
        for _ in 0..4 {
            q.tick(MS, 1.0, true);
        }
        assert_eq!(q.p.interval(), 1000 * MS);
    }
}
