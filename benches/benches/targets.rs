//! The targets service's board with a large org: the time one evaluation of every series
//! (targets, pace, leaderboards, distributions) takes, and with it the exposition text that
//! `/metrics` serves until the next: what the service does every tick; then the same with
//! `[expose] windows` narrowed to five windows.
//!
//! Run: `cargo bench -p salespulse-bench --bench targets`

use rust_decimal::Decimal;
use salespulse_aggregate::{Calendar, Scope, Window};
use salespulse_bench::{median_secs, Rng};
use salespulse_pipeline::targets_exposition;
use salespulse_targets::{Actual, Elapsed, TargetsBoard, RANKED};

fn main() {
    let cal = Calendar::utc();
    let elapsed = Elapsed::new(cal, false, []);
    let now = chrono::Utc::now().timestamp();
    for reps in [1_000u32, 10_000] {
        let mut board = TargetsBoard::default();
        let mut rng = Rng::new(7);
        for r in 0..reps {
            let (rep, team) = (format!("rep-{r:05}"), format!("team-{:03}", r % 500));
            board.set_member(&format!("member/{rep}"), Some((rep.clone(), team.clone())));
            for metric in RANKED {
                for window in Window::ALL {
                    // Many reps share a value (ties share a rank).
                    let value = Decimal::from(rng.below(5_000));
                    let key = format!("{rep}/{}/{}", metric.name(), window.label());
                    board.set_actual(
                        &key,
                        Some(Actual {
                            scope: Scope::Rep,
                            id: rep.clone(),
                            team: team.clone(),
                            metric,
                            kind: None,
                            window,
                            value,
                        }),
                    );
                }
            }
        }
        let mut series = 0;
        let secs = median_secs(3, || series = board.series(now, &cal, &elapsed).len());
        assert!(series as u32 > reps, "a rank for every rep");
        // A tick: the evaluation and what `/metrics` serves until the next.
        let state = salespulse_expose::AppState {
            board: Default::default(),
            health: salespulse_expose::Health::new("bench"),
            ready: Default::default(),
            snapshot: Default::default(),
        };
        // A tick, then a scrape of what it left: (tick seconds, scrape seconds, bytes).
        let tick_and_scrape = |board: &TargetsBoard, exposed: &salespulse_expose::Exposed| {
            let tick = median_secs(3, || {
                let text = targets_exposition(board.series(now, &cal, &elapsed), exposed);
                *state.snapshot.write().expect("lock") = std::sync::Arc::new(text);
            });
            let mut bytes = 0;
            let scrape = median_secs(3, || bytes = salespulse_bench::scrape_bytes(&state));
            (tick, scrape, bytes)
        };
        let (tick, scrape, bytes) = tick_and_scrape(&board, &Default::default());
        assert!(bytes > series * 40, "a line for every series");
        println!(
            "targets board, {reps} reps: {series} series, one evaluation median {:.0} ms; \
             a tick (with its exposition) {:.0} ms; a scrape ({:.1} MiB) {:.0} ms",
            secs * 1000.0,
            tick * 1000.0,
            bytes as f64 / (1 << 20) as f64,
            scrape * 1000.0
        );
        // `[expose] windows` narrowed to the to-date windows of the boards.
        let windows = [
            Window::Today,
            Window::Wtd,
            Window::Mtd,
            Window::Qtd,
            Window::Ytd,
        ];
        board.show_windows(windows);
        let exposed = salespulse_expose::Exposed {
            windows: windows.into_iter().collect(),
            ..Default::default()
        };
        let (tick, scrape, bytes) = tick_and_scrape(&board, &exposed);
        println!(
            "targets board, {reps} reps, [expose] windows = {} windows: a tick {:.0} ms; \
             a scrape ({:.1} MiB) {:.0} ms",
            windows.len(),
            tick * 1000.0,
            bytes as f64 / (1 << 20) as f64,
            scrape * 1000.0
        );
    }
}
