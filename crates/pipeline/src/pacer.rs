//! How often the loop ticks. A tick moves the windows and emits the changed series, so its
//! interval is how late a number can be on the board; but a tick costs time in proportion to
//! the cells held and the series changed, taken from ingestion. The pacer ticks as often as
//! `publish.min_interval_ms` while ticks are cheap, and spaces them out, up to
//! `publish.interval_ms`, so that ticking takes at most a fifth of the loop's time.
//!
//! While the service is behind its input (by more than `service.ready_max_lag` records), the
//! next tick waits `publish.catch_up_interval_ms`. A series changes once per tick however many
//! records moved it, so while a backlog is worked off most of a tick's output would be values
//! that are out of date as soon as they are published; fewer ticks leave more of the loop to
//! the backlog. The stretch costs a short backlog nothing: once every input partition has been
//! read to its end, the loop ticks at once instead of waiting out the stretched interval, and
//! the ticks after it are paced as above again.

use std::time::Duration;

/// Share of the loop's time ticks may take.
const BUDGET: f64 = 0.2;
/// Weight of the newest tick in the running cost (the rest is the history).
const SMOOTHING: f64 = 0.3;

#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    min: Duration,
    max: Duration,
    catch_up: Duration,
    /// Running (exponentially weighted) cost of a tick, in seconds.
    cost: f64,
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
            stretched: None,
        }
    }

    /// Takes the tick that just ran into account: its cost, and whether the input was behind
    /// during the interval before it.
    pub fn record(&mut self, took: Duration, behind: bool) {
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
        let wanted = Duration::from_secs_f64(self.cost / BUDGET);
        wanted.clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn cheap_ticks_come_at_the_shortest_interval() {
        let mut p = Pacer::new(100 * MS, 1000 * MS, 1000 * MS);
        assert_eq!(p.interval(), 100 * MS);
        for _ in 0..50 {
            p.record(2 * MS, false);
        }
        assert_eq!(p.interval(), 100 * MS);
    }

    #[test]
    fn costly_ticks_are_spaced_to_a_fifth_of_the_time_and_no_further_than_the_longest() {
        let mut p = Pacer::new(100 * MS, 1000 * MS, 1000 * MS);
        for _ in 0..50 {
            p.record(40 * MS, false);
        }
        let i = p.interval();
        assert!(i > 190 * MS && i <= 200 * MS, "{i:?}");
        for _ in 0..50 {
            p.record(350 * MS, false);
        }
        assert_eq!(p.interval(), 1000 * MS);
        // Cheap again: back to the shortest interval within a few ticks.
        for _ in 0..20 {
            p.record(MS, false);
        }
        assert_eq!(p.interval(), 100 * MS);
    }

    #[test]
    fn one_slow_tick_does_not_stall_the_board() {
        let mut p = Pacer::new(100 * MS, 1000 * MS, 1000 * MS);
        p.record(200 * MS, false);
        assert!(p.interval() <= 1000 * MS);
        p.record(MS, false);
        p.record(MS, false);
        assert!(p.interval() < 1000 * MS);
    }

    #[test]
    fn equal_bounds_tick_at_a_fixed_interval() {
        let mut p = Pacer::new(1000 * MS, 1000 * MS, 1000 * MS);
        p.record(Duration::ZERO, false);
        assert_eq!(p.interval(), 1000 * MS);
        p.record(5000 * MS, false);
        assert_eq!(p.interval(), 1000 * MS);
    }

    #[test]
    fn behind_the_input_ticks_stretch_to_the_catch_up_interval_and_come_back() {
        let mut p = Pacer::new(100 * MS, 1000 * MS, 5000 * MS);
        p.record(MS, false);
        assert_eq!(p.interval(), 100 * MS);
        for _ in 0..3 {
            p.record(MS, true);
            assert_eq!(p.interval(), 5000 * MS);
        }
        assert!(p.stretched());
        // Caught up: paced by the cost of a tick again at once.
        p.record(MS, false);
        assert!(!p.stretched());
        assert_eq!(p.interval(), 100 * MS);
    }

    #[test]
    fn behind_never_ticks_more_often_than_paced() {
        let mut p = Pacer::new(100 * MS, 1000 * MS, 5000 * MS);
        for _ in 0..50 {
            p.record(350 * MS, false);
        }
        assert_eq!(p.interval(), 1000 * MS);
        p.record(350 * MS, true);
        assert_eq!(p.interval(), 5000 * MS);
        // A catch-up interval below the longest paced one is raised to it.
        let mut q = Pacer::new(100 * MS, 1000 * MS, 500 * MS);
        q.record(MS, true);
        q.record(MS, true);
        q.record(MS, true);
        q.record(MS, true);
        assert_eq!(q.interval(), 1000 * MS);
    }
}
