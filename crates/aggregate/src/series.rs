//! What the aggregation core hands to exposition and publishing: the current series of a
//! subject (a rep, a team or the org).

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::calendar::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Rep,
    Team,
    Org,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Rep, Scope::Team, Scope::Org];

    pub fn label(self) -> &'static str {
        match self {
            Scope::Rep => "rep",
            Scope::Team => "team",
            Scope::Org => "org",
        }
    }
}

/// Every metric of the contract, without its scope prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Bookings,
    DealsWon,
    DealsLost,
    WinRate,
    AvgDealSize,
    SalesCycleSeconds,
    PipelineCreated,
    Activities,
    OpenPipeline,
    WeightedPipeline,
    PipelineExpected,
    WeightedPipelineExpected,
    /// 1 under the team the roster puts a rep in now (rep scope only). A rep's other series
    /// can also sit under teams it left (records that named their own team stay there); this
    /// one says where the rep belongs.
    Member,
}

impl Metric {
    pub const ALL: [Metric; 13] = [
        Metric::Bookings,
        Metric::DealsWon,
        Metric::DealsLost,
        Metric::WinRate,
        Metric::AvgDealSize,
        Metric::SalesCycleSeconds,
        Metric::PipelineCreated,
        Metric::Activities,
        Metric::OpenPipeline,
        Metric::WeightedPipeline,
        Metric::PipelineExpected,
        Metric::WeightedPipelineExpected,
        Metric::Member,
    ];

    /// The metrics of the deals service (activities come from the activities service). The
    /// deals service also publishes the roster membership of reps: one owner per series.
    pub const DEALS: [Metric; 12] = [
        Metric::Bookings,
        Metric::DealsWon,
        Metric::DealsLost,
        Metric::WinRate,
        Metric::AvgDealSize,
        Metric::SalesCycleSeconds,
        Metric::PipelineCreated,
        Metric::OpenPipeline,
        Metric::WeightedPipeline,
        Metric::PipelineExpected,
        Metric::WeightedPipelineExpected,
        Metric::Member,
    ];

    pub const ACTIVITIES: [Metric; 1] = [Metric::Activities];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Bookings => "bookings",
            Metric::DealsWon => "deals_won",
            Metric::DealsLost => "deals_lost",
            Metric::WinRate => "win_rate",
            Metric::AvgDealSize => "avg_deal_size",
            Metric::SalesCycleSeconds => "sales_cycle_seconds",
            Metric::PipelineCreated => "pipeline_created",
            Metric::Activities => "activities",
            Metric::OpenPipeline => "open_pipeline",
            Metric::WeightedPipeline => "weighted_pipeline",
            Metric::PipelineExpected => "pipeline_expected",
            Metric::WeightedPipelineExpected => "weighted_pipeline_expected",
            Metric::Member => "member",
        }
    }

    pub fn from_name(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Name of the extra label this metric carries, if any.
    pub fn extra_label(self) -> Option<&'static str> {
        match self {
            Metric::Activities => Some("kind"),
            Metric::OpenPipeline => Some("stage"),
            Metric::PipelineExpected | Metric::WeightedPipelineExpected => Some("period_type"),
            _ => None,
        }
    }

    /// Whether the metric has a `window` label (the others are current state).
    pub fn windowed(self) -> bool {
        !matches!(
            self,
            Metric::OpenPipeline
                | Metric::WeightedPipeline
                | Metric::PipelineExpected
                | Metric::WeightedPipelineExpected
                | Metric::Member
        )
    }
}

/// The owner of a set of series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Rep(Arc<str>),
    Team(Arc<str>),
    Org,
}

/// One value of one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub scope: Scope,
    pub metric: Metric,
    pub rep: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub window: Option<Window>,
    /// Value of [`Metric::extra_label`].
    pub extra: Option<Arc<str>>,
    pub value: Decimal,
}

impl Series {
    /// The id of the series within its scope: the rep, the team, or `org`.
    pub fn id(&self) -> &str {
        match self.scope {
            Scope::Rep => self.rep.as_deref().unwrap_or_default(),
            Scope::Team => self.team.as_deref().unwrap_or_default(),
            Scope::Org => "org",
        }
    }
}

/// The complete current set of series of one subject; a subject with no series has none left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectSeries {
    pub subject: Subject,
    pub series: Vec<Series>,
}

/// Ratios are rounded to this many decimal places; sums and counts are exact.
pub const RATIO_DP: u32 = 6;

pub(crate) fn ratio(num: Decimal, den: Decimal) -> Option<Decimal> {
    if den.is_zero() {
        return None;
    }
    num.checked_div(den).map(|r| {
        r.round_dp_with_strategy(
            RATIO_DP,
            rust_decimal::RoundingStrategy::MidpointAwayFromZero,
        )
        .normalize()
    })
}

/// Builds the series of one subject; shared by deals and activities.
#[derive(Debug)]
pub(crate) struct SeriesBuilder<'a> {
    pub scope: Scope,
    pub rep: Option<&'a Arc<str>>,
    pub team: Option<&'a Arc<str>>,
    pub out: &'a mut Vec<Series>,
}

impl SeriesBuilder<'_> {
    pub fn push(
        &mut self,
        metric: Metric,
        window: Option<Window>,
        extra: Option<&Arc<str>>,
        value: Decimal,
    ) {
        self.out.push(Series {
            scope: self.scope,
            metric,
            rep: self.rep.cloned(),
            team: self.team.cloned(),
            window,
            extra: extra.cloned(),
            value: value.normalize(),
        });
    }
}
