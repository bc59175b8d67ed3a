//! Targets, pace and leaderboards, computed from the published board (`sales.metrics`) and
//! the targets sales operations sets (`sales.targets`) — never from raw events. Pure: the
//! service feeds records and the clock in.

mod board;
mod distribution;
mod elapsed;
mod events;
mod period;
mod plan;
mod ramp;
mod target;
mod ticker;

pub use board::{Actual, Expected, Out, Rollup, TargetsBoard, RANKED};
pub use distribution::{median, Distribution, RepAttainment, ATTAINMENT_THRESHOLDS};
pub use elapsed::Elapsed;
pub use events::{Event, EventRules, EventTopic, Notifier};
pub use period::{Period, PeriodError, PeriodType};
pub use plan::{
    plan_key, plans_from_rows, Decelerator, DeceleratorRecord, Plan, PlanError, PlanRecord,
    PlanRow, Tier, TierRecord, PLAN_COLUMNS,
};
pub use ramp::{Ramp, RampError};
pub use target::{Target, TargetError, TargetMetric, TargetRules};
pub use ticker::Ticker;
