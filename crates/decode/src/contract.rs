use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

/// Whether a stage is still in the pipeline or closed one way or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

/// Where a deal stands in a forecast call, as sales teams categorise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForecastCategory {
    Pipeline,
    BestCase,
    Commit,
    Omitted,
    Closed,
}

impl ForecastCategory {
    pub const ALL: [ForecastCategory; 5] = [
        ForecastCategory::Pipeline,
        ForecastCategory::BestCase,
        ForecastCategory::Commit,
        ForecastCategory::Omitted,
        ForecastCategory::Closed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ForecastCategory::Pipeline => "pipeline",
            ForecastCategory::BestCase => "best_case",
            ForecastCategory::Commit => "commit",
            ForecastCategory::Omitted => "omitted",
            ForecastCategory::Closed => "closed",
        }
    }

    pub fn from_label(s: &str) -> Option<ForecastCategory> {
        ForecastCategory::ALL.into_iter().find(|c| c.label() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl<'de> Deserialize<'de> for ForecastCategory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ForecastCategory::from_label(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown forecast category `{s}`, expected pipeline, best_case, commit, omitted or closed"
            ))
        })
    }
}

/// A deal stage with its win probability. The list of stages is ordered: a move to a later
/// open stage is an advance, to an earlier one a regression.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Between 0 and 1; weights the open pipeline.
    pub probability: Decimal,
    /// `open` (default), `won` or `lost`.
    #[serde(default = "default_stage_kind", with = "stage_kind_serde")]
    pub kind: StageKind,
    /// Forecast category of a deal in this stage whose record names none; when absent,
    /// `closed` for a won stage, `omitted` for a lost one and `pipeline` for an open one.
    #[serde(default, rename = "forecast_category")]
    forecast_category_setting: Option<ForecastCategory>,
    /// An open deal in this stage for longer than this many days is stalled (default 30).
    #[serde(default = "default_stall_days")]
    pub stall_days: u32,
    /// Resolved from `forecast_category_setting` and `kind` by [`Contract::new`].
    #[serde(skip, default = "default_category")]
    pub forecast_category: ForecastCategory,
}

fn default_stage_kind() -> StageKind {
    StageKind::Open
}

fn default_stall_days() -> u32 {
    30
}

fn default_category() -> ForecastCategory {
    ForecastCategory::Pipeline
}

impl Stage {
    /// A stage with the default forecast category of its kind and the default stall limit.
    pub fn new(name: &str, probability: Decimal, kind: StageKind) -> Stage {
        Stage {
            name: name.to_owned(),
            probability,
            kind,
            forecast_category_setting: None,
            stall_days: default_stall_days(),
            forecast_category: default_category(),
        }
        .resolved()
    }

    /// Sets the forecast category of deals in this stage that name none.
    pub fn with_forecast_category(mut self, c: ForecastCategory) -> Stage {
        self.forecast_category_setting = Some(c);
        self.resolved()
    }

    pub fn with_stall_days(mut self, days: u32) -> Stage {
        self.stall_days = days;
        self
    }

    fn resolved(mut self) -> Stage {
        self.forecast_category = self.forecast_category_setting.unwrap_or(match self.kind {
            StageKind::Won => ForecastCategory::Closed,
            StageKind::Lost => ForecastCategory::Omitted,
            StageKind::Open => ForecastCategory::Pipeline,
        });
        self
    }
}

mod stage_kind_serde {
    use super::StageKind;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StageKind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "open" => Ok(StageKind::Open),
            "won" => Ok(StageKind::Won),
            "lost" => Ok(StageKind::Lost),
            other => Err(serde::de::Error::custom(format!(
                "unknown stage kind `{other}`, expected open, won or lost"
            ))),
        }
    }
}

/// The part of the configuration that defines what a valid record is (`[contract]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContractConfig {
    /// Currency every amount is converted into (ISO 4217).
    pub reporting_currency: String,
    /// Units of the reporting currency per unit of each currency. Must contain the reporting
    /// currency itself (at 1).
    pub rates: HashMap<String, Decimal>,
    /// Deal stages in pipeline order.
    pub stages: Vec<Stage>,
    /// Activity kinds (at most 16).
    pub kinds: Vec<String>,
    /// A record stamped further than this into the future is rejected.
    pub max_future_skew_seconds: i64,
    /// Larger record values are rejected without being parsed.
    pub max_payload_bytes: usize,
    /// Longest accepted id (bytes).
    pub max_id_bytes: usize,
    /// Largest accepted amount, in the record's own currency.
    pub max_amount: Decimal,
    /// Days an activity's event id is remembered after the activity was counted: a record
    /// with the same id within them is a duplicate; after them it counts again.
    pub duplicate_window_days: u32,
}

/// Days an activity's event id is remembered unless configured otherwise.
pub const DUPLICATE_WINDOW_DAYS: u32 = 7;

impl Default for ContractConfig {
    fn default() -> Self {
        let stage = |name: &str, p: &str, kind, category, stall| {
            Stage::new(name, Decimal::from_str(p).unwrap_or_default(), kind)
                .with_forecast_category(category)
                .with_stall_days(stall)
        };
        use ForecastCategory as F;
        ContractConfig {
            reporting_currency: "USD".into(),
            rates: [("USD", "1"), ("EUR", "1.08"), ("GBP", "1.27")]
                .into_iter()
                .map(|(c, r)| (c.to_owned(), Decimal::from_str(r).unwrap_or_default()))
                .collect(),
            stages: vec![
                stage("prospecting", "0.1", StageKind::Open, F::Pipeline, 14),
                stage("qualification", "0.2", StageKind::Open, F::Pipeline, 21),
                stage("proposal", "0.5", StageKind::Open, F::BestCase, 30),
                stage("negotiation", "0.8", StageKind::Open, F::Commit, 30),
                stage("closed_won", "1", StageKind::Won, F::Closed, 30),
                stage("closed_lost", "0", StageKind::Lost, F::Omitted, 30),
            ],
            kinds: ["call", "email", "meeting", "demo", "task"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            max_future_skew_seconds: 300,
            duplicate_window_days: DUPLICATE_WINDOW_DAYS,
            max_payload_bytes: 64 * 1024,
            max_id_bytes: 128,
            max_amount: Decimal::from(1_000_000_000_000i64),
        }
    }
}

/// A configuration that cannot define a contract.
#[derive(Debug, thiserror::Error)]
#[error("invalid [contract] configuration: {0}")]
pub struct ContractError(String);

/// Validated contract settings, shared by every decoder.
#[derive(Debug, Clone)]
pub struct Contract {
    pub reporting_currency: String,
    rates: HashMap<String, Decimal>,
    stages: Vec<Stage>,
    kinds: Vec<String>,
    pub max_future_skew_ms: i64,
    pub max_payload_bytes: usize,
    pub max_id_bytes: usize,
    pub max_amount: Decimal,
    /// Seconds an activity's event id is remembered after it was counted.
    pub duplicate_window_seconds: i64,
}

/// Most activity kinds a contract may define; counts are kept in fixed-size arrays.
pub const MAX_KINDS: usize = 16;

impl Contract {
    pub fn new(cfg: ContractConfig) -> Result<Contract, ContractError> {
        let err = |m: String| Err(ContractError(m));
        if cfg.rates.get(&cfg.reporting_currency) != Some(&Decimal::ONE) {
            return err(format!(
                "rates must map the reporting currency {} to 1",
                cfg.reporting_currency
            ));
        }
        if let Some((c, r)) = cfg
            .rates
            .iter()
            .find(|(_, r)| r.is_sign_negative() || r.is_zero())
        {
            return err(format!("rate of {c} must be positive, got {r}"));
        }
        if cfg.stages.is_empty() || cfg.stages.len() > 64 {
            return err("between 1 and 64 stages are required".into());
        }
        for s in &cfg.stages {
            if s.probability < Decimal::ZERO || s.probability > Decimal::ONE {
                return err(format!(
                    "probability of stage {} must be within 0..=1",
                    s.name
                ));
            }
        }
        if !cfg.stages.iter().any(|s| s.kind == StageKind::Won)
            || !cfg.stages.iter().any(|s| s.kind == StageKind::Lost)
        {
            return err("stages need at least one `won` and one `lost` stage".into());
        }
        if cfg.kinds.is_empty() || cfg.kinds.len() > MAX_KINDS {
            return err(format!(
                "between 1 and {MAX_KINDS} activity kinds are required"
            ));
        }
        if cfg.max_future_skew_seconds < 0 || cfg.max_payload_bytes == 0 || cfg.max_id_bytes == 0 {
            return err("limits must be positive".into());
        }
        if !(1..=3_660).contains(&cfg.duplicate_window_days) {
            return err(format!(
                "duplicate_window_days must be within 1..=3660, got {}",
                cfg.duplicate_window_days
            ));
        }
        if let Some(s) = cfg
            .stages
            .iter()
            .find(|s| s.kind == StageKind::Open && s.stall_days == 0)
        {
            return err(format!("stall_days of stage {} must be positive", s.name));
        }
        let mut names: Vec<&str> = cfg.stages.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return err("stage names must be distinct".into());
        }
        Ok(Contract {
            reporting_currency: cfg.reporting_currency,
            rates: cfg.rates,
            stages: cfg.stages.into_iter().map(Stage::resolved).collect(),
            kinds: cfg.kinds,
            max_future_skew_ms: cfg.max_future_skew_seconds * 1000,
            max_payload_bytes: cfg.max_payload_bytes,
            max_id_bytes: cfg.max_id_bytes,
            max_amount: cfg.max_amount,
            duplicate_window_seconds: i64::from(cfg.duplicate_window_days) * 86_400,
        })
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    pub fn stage_index(&self, name: &str) -> Option<u8> {
        self.stages
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u8)
    }

    pub fn kind_index(&self, name: &str) -> Option<u8> {
        self.kinds.iter().position(|k| k == name).map(|i| i as u8)
    }

    pub fn rate(&self, currency: &str) -> Option<Decimal> {
        self.rates.get(currency).copied()
    }
}

impl Default for Contract {
    fn default() -> Self {
        Contract::new(ContractConfig::default()).expect("the default contract is valid")
    }
}
