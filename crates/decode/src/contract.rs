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

/// A deal stage with its win probability.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Between 0 and 1; weights the open pipeline.
    pub probability: Decimal,
    /// `open` (default), `won` or `lost`.
    #[serde(default = "default_stage_kind", with = "stage_kind_serde")]
    pub kind: StageKind,
}

fn default_stage_kind() -> StageKind {
    StageKind::Open
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
}

impl Default for ContractConfig {
    fn default() -> Self {
        let stage = |name: &str, p: &str, kind| Stage {
            name: name.to_owned(),
            probability: Decimal::from_str(p).unwrap_or_default(),
            kind,
        };
        ContractConfig {
            reporting_currency: "USD".into(),
            rates: [("USD", "1"), ("EUR", "1.08"), ("GBP", "1.27")]
                .into_iter()
                .map(|(c, r)| (c.to_owned(), Decimal::from_str(r).unwrap_or_default()))
                .collect(),
            stages: vec![
                stage("prospecting", "0.1", StageKind::Open),
                stage("qualification", "0.2", StageKind::Open),
                stage("proposal", "0.5", StageKind::Open),
                stage("negotiation", "0.8", StageKind::Open),
                stage("closed_won", "1", StageKind::Won),
                stage("closed_lost", "0", StageKind::Lost),
            ],
            kinds: ["call", "email", "meeting", "demo", "task"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            max_future_skew_seconds: 300,
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
        Ok(Contract {
            reporting_currency: cfg.reporting_currency,
            rates: cfg.rates,
            stages: cfg.stages,
            kinds: cfg.kinds,
            max_future_skew_ms: cfg.max_future_skew_seconds * 1000,
            max_payload_bytes: cfg.max_payload_bytes,
            max_id_bytes: cfg.max_id_bytes,
            max_amount: cfg.max_amount,
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
