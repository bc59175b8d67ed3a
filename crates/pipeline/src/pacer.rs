//! How often the loop ticks. A tick moves the windows and emits the changed series, so its
//! interval is how late a number can be on the board; but a tick costs time in proportion to
//! the cells held and the series changed, taken from ingestion. The pacer ticks as often as
//! `publish.min_interval_ms` while ticks are cheap, and spaces them out, up to
//! `publish.interval_ms`, so that ticking takes at most a fifth of the loop's time.

use std::time::Duration;

/// Share of the loop's time ticks may take.
const BUDGET: f64 = 0.2;
/// Weight of the newest tick in the running cost (the rest is the history).
const SMOOTHING: f64 = 0.3;

#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    min: Duration,
    max: Duration,
    /// Running (exponentially weighted) cost of a tick, in seconds.
    cost: f64,
}

impl Pacer {
    pub fn new(min: Duration, max: Duration) -> Pacer {
        Pacer {
            min: min.min(max),
            max,
            cost: 0.0,
        }
    }

    /// Takes the cost of the tick that just ran into account.
    pub fn record(&mut self, took: Duration) {
        self.cost = SMOOTHING * took.as_secs_f64() + (1.0 - SMOOTHING) * self.cost;
    }

    /// Time from the end of one tick to the start of the next.
    pub fn interval(&self) -> Duration {
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
        let mut p = Pacer::new(100 * MS, 1000 * MS);
        assert_eq!(p.interval(), 100 * MS);
        for _ in 0..50 {
            p.record(2 * MS);
        }
        assert_eq!(p.interval(), 100 * MS);
    }

    #[test]
    fn costly_ticks_are_spaced_to_a_fifth_of_the_time_and_no_further_than_the_longest() {
        let mut p = Pacer::new(100 * MS, 1000 * MS);
        for _ in 0..50 {
            p.record(40 * MS);
        }
        let i = p.interval();
        assert!(i > 190 * MS && i <= 200 * MS, "{i:?}");
        for _ in 0..50 {
            p.record(350 * MS);
        }
        assert_eq!(p.interval(), 1000 * MS);
        // Cheap again: back to the shortest interval within a few ticks.
        for _ in 0..20 {
            p.record(MS);
        }
        assert_eq!(p.interval(), 100 * MS);
    }

    #[test]
    fn one_slow_tick_does_not_stall_the_board() {
        let mut p = Pacer::new(100 * MS, 1000 * MS);
        p.record(200 * MS);
        assert!(p.interval() <= 1000 * MS);
        p.record(MS);
        p.record(MS);
        assert!(p.interval() < 1000 * MS);
    }

    #[test]
    fn equal_bounds_tick_at_a_fixed_interval() {
        let mut p = Pacer::new(1000 * MS, 1000 * MS);
        p.record(Duration::ZERO);
        assert_eq!(p.interval(), 1000 * MS);
        p.record(5000 * MS);
        assert_eq!(p.interval(), 1000 * MS);
    }
}
