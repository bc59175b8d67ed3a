//! What the aggregation core hands to exposition and publishing: the current series of a
//! subject (a rep, a team or the org).

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::calendar::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Rep,
    Team,
    /// A level above teams (see [`crate::Regions`]).
    Region,
    Org,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Rep, Scope::Team, Scope::Region, Scope::Org];

    pub fn label(self) -> &'static str {
        match self {
            Scope::Rep => "rep",
            Scope::Team => "team",
            Scope::Region => "region",
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
    StageEntered,
    StageExited,
    StageConversionRatio,
    StageSeconds,
    CloseDatePushed,
    CloseDatePulledIn,
    PipelinePushed,
    PipelinePulledIn,
    PipelineVelocity,
    ActivitySeconds,
    OpenDeals,
    StageAgeSeconds,
    StalledDeals,
    StalledPipeline,
    OverdueDeals,
    OverduePipeline,
    Forecast,
    ForecastRollup,
    ForecastUndated,
    /// 1 per rep on the roster, with its name and region as labels (rep scope only).
    Info,
    /// Mean weekly value of the last complete weeks (rep scope, under the roster team; the
    /// `metric` label names what is measured).
    ConsistencyMean,
    /// Standard deviation of the weekly values.
    ConsistencyStddev,
    /// Standard deviation / mean: the coefficient of variation.
    ConsistencyCv,
    /// How many complete weeks were measured.
    ConsistencySamples,
    /// Bookings per local week (team, region and org scopes; the `week` label is the week's
    /// Monday), for the kept weeks (see [`crate::Bounds::kept`]) and the current one.
    WeeklyBookings,
}

/// Most extra labels (besides rep, team and window) a metric carries.
pub const MAX_EXTRA: usize = 3;

/// Values of a series' extra labels, in the order of [`Metric::extra_labels`].
pub type Extra = [Option<Arc<str>>; MAX_EXTRA];

impl Metric {
    pub const ALL: [Metric; 38] = [
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
        Metric::StageEntered,
        Metric::StageExited,
        Metric::StageConversionRatio,
        Metric::StageSeconds,
        Metric::CloseDatePushed,
        Metric::CloseDatePulledIn,
        Metric::PipelinePushed,
        Metric::PipelinePulledIn,
        Metric::PipelineVelocity,
        Metric::ActivitySeconds,
        Metric::OpenDeals,
        Metric::StageAgeSeconds,
        Metric::StalledDeals,
        Metric::StalledPipeline,
        Metric::OverdueDeals,
        Metric::OverduePipeline,
        Metric::Forecast,
        Metric::ForecastRollup,
        Metric::ForecastUndated,
        Metric::Info,
        Metric::ConsistencyMean,
        Metric::ConsistencyStddev,
        Metric::ConsistencyCv,
        Metric::ConsistencySamples,
        Metric::WeeklyBookings,
    ];

    /// The metrics of the deals service (activities come from the activities service). The
    /// deals service also publishes the roster membership of reps: one owner per series.
    /// Both publish consistency, of what each measures (see [`Metric::owned_by`]).
    pub const DEALS: [Metric; 36] = {
        // Every metric but the activities service's, in the order of `ALL`.
        let mut out = [Metric::Bookings; 36];
        let (mut i, mut n) = (0, 0);
        while i < Metric::ALL.len() {
            let m = Metric::ALL[i];
            if !matches!(m, Metric::Activities | Metric::ActivitySeconds) {
                out[n] = m;
                n += 1;
            }
            i += 1;
        }
        out
    };

    pub const ACTIVITIES: [Metric; 6] = [
        Metric::Activities,
        Metric::ActivitySeconds,
        Metric::ConsistencyMean,
        Metric::ConsistencyStddev,
        Metric::ConsistencyCv,
        Metric::ConsistencySamples,
    ];

    /// Whether a series of this metric whose `metric` label is `measured` belongs to the
    /// activities service (else to the deals service): consistency is published by the service
    /// that counts what it measures.
    pub fn of_activities(self, measured: Option<&str>) -> bool {
        match self {
            Metric::Activities | Metric::ActivitySeconds => true,
            Metric::ConsistencyMean
            | Metric::ConsistencyStddev
            | Metric::ConsistencyCv
            | Metric::ConsistencySamples => measured == Some("activities"),
            _ => false,
        }
    }

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
            Metric::StageEntered => "stage_entered",
            Metric::StageExited => "stage_exited",
            Metric::StageConversionRatio => "stage_conversion_ratio",
            Metric::StageSeconds => "stage_seconds",
            Metric::CloseDatePushed => "close_date_pushed",
            Metric::CloseDatePulledIn => "close_date_pulled_in",
            Metric::PipelinePushed => "pipeline_pushed",
            Metric::PipelinePulledIn => "pipeline_pulled_in",
            Metric::PipelineVelocity => "pipeline_velocity",
            Metric::ActivitySeconds => "activity_seconds",
            Metric::OpenDeals => "open_deals",
            Metric::StageAgeSeconds => "stage_age_seconds",
            Metric::StalledDeals => "stalled_deals",
            Metric::StalledPipeline => "stalled_pipeline",
            Metric::OverdueDeals => "overdue_deals",
            Metric::OverduePipeline => "overdue_pipeline",
            Metric::Forecast => "forecast_category_amount",
            Metric::ForecastRollup => "forecast_rollup",
            Metric::ForecastUndated => "forecast_undated",
            Metric::Info => "info",
            Metric::ConsistencyMean => "consistency_mean",
            Metric::ConsistencyStddev => "consistency_stddev",
            Metric::ConsistencyCv => "consistency_cv",
            Metric::ConsistencySamples => "consistency_samples",
            Metric::WeeklyBookings => "weekly_bookings",
        }
    }

    pub fn from_name(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Names of the extra labels this metric carries (besides rep, team and window).
    pub fn extra_labels(self) -> &'static [&'static str] {
        match self {
            Metric::Activities | Metric::ActivitySeconds => &["kind"],
            Metric::OpenPipeline
            | Metric::StageEntered
            | Metric::StageConversionRatio
            | Metric::StageSeconds
            | Metric::OpenDeals
            | Metric::StageAgeSeconds
            | Metric::StalledDeals
            | Metric::StalledPipeline => &["stage"],
            Metric::StageExited => &["stage", "to"],
            Metric::PipelineExpected | Metric::WeightedPipelineExpected => &["period_type"],
            Metric::Forecast => &["category", "period_type", "period"],
            Metric::ForecastRollup => &["rollup", "period_type", "period"],
            Metric::ForecastUndated => &["category"],
            Metric::Info => &["name", "region", "hired_at"],
            Metric::ConsistencyMean
            | Metric::ConsistencyStddev
            | Metric::ConsistencyCv
            | Metric::ConsistencySamples => &["metric"],
            Metric::WeeklyBookings => &["week"],
            _ => &[],
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
                | Metric::OpenDeals
                | Metric::StageAgeSeconds
                | Metric::StalledDeals
                | Metric::StalledPipeline
                | Metric::OverdueDeals
                | Metric::OverduePipeline
                | Metric::Forecast
                | Metric::ForecastRollup
                | Metric::ForecastUndated
                | Metric::Info
                | Metric::ConsistencyMean
                | Metric::ConsistencyStddev
                | Metric::ConsistencyCv
                | Metric::ConsistencySamples
        )
    }

    /// Pairs of (label name, value) of a series' extra labels.
    pub fn extra_pairs<'a>(
        self,
        extra: &'a Extra,
    ) -> impl Iterator<Item = (&'static str, &'a Arc<str>)> + 'a {
        self.extra_labels()
            .iter()
            .zip(extra.iter())
            .filter_map(|(n, v)| v.as_ref().map(|v| (*n, v)))
    }
}

/// The owner of a set of series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Rep(Arc<str>),
    Team(Arc<str>),
    Region(Arc<str>),
    Org,
}

/// One value of one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub scope: Scope,
    pub metric: Metric,
    pub rep: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    /// The region (region series only).
    pub region: Option<Arc<str>>,
    pub window: Option<Window>,
    /// Values of [`Metric::extra_labels`].
    pub extra: Extra,
    pub value: Decimal,
    /// The rep's name on the roster (rep series only).
    pub name: Option<Arc<str>>,
}

impl Series {
    /// The id of the series within its scope: the rep, the team, or `org`.
    pub fn id(&self) -> &str {
        match self.scope {
            Scope::Rep => self.rep.as_deref().unwrap_or_default(),
            Scope::Team => self.team.as_deref().unwrap_or_default(),
            Scope::Region => self.region.as_deref().unwrap_or_default(),
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
    pub region: Option<&'a Arc<str>>,
    pub name: Option<&'a Arc<str>>,
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
        self.push_labels(metric, window, [extra, None, None], value);
    }

    /// Pushes a series with several extra labels.
    pub fn push_labels(
        &mut self,
        metric: Metric,
        window: Option<Window>,
        extra: [Option<&Arc<str>>; MAX_EXTRA],
        value: Decimal,
    ) {
        self.out.push(Series {
            scope: self.scope,
            metric,
            rep: self.rep.cloned(),
            team: self.team.cloned(),
            region: self.region.cloned(),
            window,
            extra: extra.map(|e| e.cloned()),
            value: value.normalize(),
            name: self.name.cloned(),
        });
    }
}
