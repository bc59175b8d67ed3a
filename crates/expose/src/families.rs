//! The one place that names and describes every metric family salespulse exposes.

use salespulse_aggregate::{Metric, Scope};

/// Prometheus name of a business family, e.g. `sales_rep_bookings`.
pub fn family_name(scope: Scope, metric: Metric) -> String {
    format!("sales_{}_{}", scope.label(), metric.name())
}

/// Help text of a business family.
pub fn help(scope: Scope, metric: Metric) -> String {
    let who = match scope {
        Scope::Rep => "per rep",
        Scope::Team => "per team",
        Scope::Region => "per region (the sum of its teams)",
        Scope::Org => "for the whole org",
    };
    let what = match metric {
        Metric::Bookings => "Won amount closed in the window, in the reporting currency",
        Metric::DealsWon => "Deals won (closed) in the window",
        Metric::DealsLost => "Deals lost (closed) in the window",
        Metric::WinRate => "Deals won / (won + lost) closed in the window; absent when none closed",
        Metric::AvgDealSize => "Mean amount of deals won in the window; absent when none won",
        Metric::SalesCycleSeconds => {
            "Mean seconds from creation to close of deals won in the window; absent when none won"
        }
        Metric::PipelineCreated => {
            "Amount of deals created in the window, in the reporting currency"
        }
        Metric::Activities => "Activities in the window, by kind",
        Metric::OpenPipeline => "Amount of open deals now, by stage, in the reporting currency",
        Metric::WeightedPipeline => "Sum of amount x stage probability over open deals now",
        Metric::PipelineExpected => {
            "Amount of open deals whose expected close date falls in the current week, month, quarter or year"
        }
        Metric::WeightedPipelineExpected => {
            "Weighted amount of open deals whose expected close date falls in the current week, month, quarter or year"
        }
        Metric::Member => "1 under the team the roster puts the rep in now",
        Metric::StageEntered => "Deals that entered the stage in the window",
        Metric::StageExited => {
            "Deals that left the stage in the window, by where they went (advanced, won, lost, regressed)"
        }
        Metric::StageConversionRatio => {
            "Share of the deals that left the stage in the window that advanced or were won; absent when none left"
        }
        Metric::StageSeconds => {
            "Mean seconds spent in the stage by the visits that ended in the window; absent when none ended"
        }
        Metric::CloseDatePushed => {
            "Moves of an open deal's expected close date into a later fiscal quarter in the window"
        }
        Metric::CloseDatePulledIn => {
            "Moves of an open deal's expected close date into an earlier fiscal quarter in the window"
        }
        Metric::PipelinePushed => {
            "Amount of the deals whose expected close date moved into a later fiscal quarter in the window"
        }
        Metric::PipelinePulledIn => {
            "Amount of the deals whose expected close date moved into an earlier fiscal quarter in the window"
        }
        Metric::PipelineVelocity => {
            "Open deals x win rate x average deal size / mean sales cycle in days, over the window; amount per day"
        }
        Metric::ActivitySeconds => "Seconds of activity (duration_seconds) in the window, by kind",
        Metric::OpenDeals => "Open deals now, by stage",
        Metric::StageAgeSeconds => {
            "Mean seconds the open deals of the stage have been in it, measured at the start of the current minute"
        }
        Metric::StalledDeals => "Open deals in their stage for longer than its stall limit, by stage",
        Metric::StalledPipeline => {
            "Amount of open deals in their stage for longer than its stall limit, by stage"
        }
        Metric::OverdueDeals => "Open deals whose expected close date has passed",
        Metric::OverduePipeline => "Amount of open deals whose expected close date has passed",
        Metric::Forecast => {
            "Amount expected to close in the current fiscal month or quarter by forecast category; closed is won in the period"
        }
        Metric::ForecastRollup => {
            "Cumulative forecast of the current fiscal month or quarter: commit = closed + commit, best_case = commit + best case, pipeline = best_case + pipeline"
        }
        Metric::Info => {
            "1 for every rep on the roster, under its roster team, with its name (the id when the roster names none) and region"
        }
        Metric::ForecastUndated => {
            "Amount of open deals with no expected close date, by forecast category"
        }
        Metric::ConsistencyMean => {
            "Mean weekly value of the last complete local weeks (from the first full week after hired_at), under the roster team; metric = bookings (reporting currency), deals_won or activities"
        }
        Metric::ConsistencyStddev => {
            "Standard deviation (population) of the weekly values of the last complete local weeks, under the roster team"
        }
        Metric::ConsistencyCv => {
            "Coefficient of variation of the weekly values of the last complete weeks: standard deviation / mean; absent when the mean is 0"
        }
        Metric::ConsistencySamples => {
            "Complete weeks the consistency of the rep is measured over (fewer than configured for a recent hire)"
        }
        Metric::WeeklyBookings => {
            "Won amount closed in each local week (week = its Monday) of the last 27 complete weeks and the current one, in the reporting currency; weeks with none are absent"
        }
    };
    format!("{what}, {who}.")
}

/// Pipeline health families, registered in [`crate::Health`].
pub mod health {
    pub const EVENTS_TOTAL: &str = "salespulse_events_total";
    pub const REJECTED_TOTAL: &str = "salespulse_rejected_total";
    pub const LAST_EVENT_TIMESTAMP: &str = "salespulse_last_event_timestamp_seconds";
    pub const CONSUMER_LAG: &str = "salespulse_consumer_lag";
    pub const METRICS_PUBLISHED_TOTAL: &str = "salespulse_metrics_published_total";
    pub const STATE_ENTRIES: &str = "salespulse_state_entries";
    pub const READY: &str = "salespulse_ready";
    pub const SCRAPE_SERIES: &str = "salespulse_board_series";
    pub const SERIES_REFUSED_TOTAL: &str = "salespulse_series_refused_total";
    pub const SNAPSHOT_BYTES: &str = "salespulse_snapshot_bytes";
    pub const SNAPSHOT_TIMESTAMP: &str = "salespulse_snapshot_timestamp_seconds";
    pub const RESTORE_SECONDS: &str = "salespulse_restore_seconds";
    pub const RESTORE_REPLAYED: &str = "salespulse_restore_replayed_records";
    pub const OWNED_SLOTS: &str = "salespulse_owned_slots";
    pub const LEADER: &str = "salespulse_leader";
    pub const ANNOUNCEMENTS_TOTAL: &str = "salespulse_announcements_total";
    pub const TICK_INTERVAL: &str = "salespulse_tick_interval_seconds";
    pub const TICK_SECONDS: &str = "salespulse_tick_seconds";
    pub const TRANSACTIONS_TOTAL: &str = "salespulse_transactions_total";
    pub const REBALANCES_TOTAL: &str = "salespulse_rebalances_total";
    pub const CONSUMERS_REPLACED_TOTAL: &str = "salespulse_consumers_replaced_total";
}
