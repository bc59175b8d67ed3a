//! Records of the `sales.targets` topic (compacted; key scope/id/metric/period).
//!
//! ```json
//! {"scope":"team","id":"team-emea","metric":"bookings","period":"2026-Q4",
//!  "value":"250000","currency":"EUR"}
//! {"scope":"rep","id":"rep-007","metric":"activities","kind":"call","period":"2026-W48","value":120}
//! ```

use std::collections::HashSet;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use salespulse_aggregate::Scope;
use serde::Deserialize;

use crate::period::Period;

/// What a target is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetMetric {
    Bookings,
    DealsWon,
    PipelineCreated,
    Activities,
}

impl TargetMetric {
    pub const ALL: [TargetMetric; 4] = [
        TargetMetric::Bookings,
        TargetMetric::DealsWon,
        TargetMetric::PipelineCreated,
        TargetMetric::Activities,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetMetric::Bookings => "bookings",
            TargetMetric::DealsWon => "deals_won",
            TargetMetric::PipelineCreated => "pipeline_created",
            TargetMetric::Activities => "activities",
        }
    }

    pub fn from_name(s: &str) -> Option<TargetMetric> {
        TargetMetric::ALL.into_iter().find(|m| m.name() == s)
    }

    pub fn is_money(self) -> bool {
        matches!(self, TargetMetric::Bookings | TargetMetric::PipelineCreated)
    }
}

/// A validated target, its value in the reporting currency for money metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scope: Scope,
    pub id: String,
    pub metric: TargetMetric,
    /// Activity kind, for `activities` targets.
    pub kind: Option<String>,
    pub period: Period,
    pub value: Decimal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    scope: String,
    id: String,
    metric: String,
    #[serde(default)]
    kind: Option<String>,
    period: String,
    value: serde_json::Value,
    #[serde(default)]
    currency: Option<String>,
}

/// A target record that cannot be used; `reason` is a short code for the dead-letter header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct TargetError {
    pub reason: &'static str,
    pub detail: String,
}

fn bad(reason: &'static str, detail: impl Into<String>) -> TargetError {
    TargetError {
        reason,
        detail: detail.into(),
    }
}

/// What a target record must agree with: kinds and currency rates.
#[derive(Debug, Clone)]
pub struct TargetRules {
    pub kinds: HashSet<String>,
    pub reporting_currency: String,
    pub rates: std::collections::HashMap<String, Decimal>,
}

impl TargetRules {
    pub fn parse(&self, payload: &[u8]) -> Result<Target, TargetError> {
        let raw: Raw =
            serde_json::from_slice(payload).map_err(|e| bad("invalid_json", e.to_string()))?;
        self.validate(raw)
    }

    /// Validates one row of a CSV file or one decoded record.
    #[allow(clippy::too_many_arguments)]
    pub fn from_fields(
        &self,
        scope: &str,
        id: &str,
        metric: &str,
        kind: Option<&str>,
        period: &str,
        value: &str,
        currency: Option<&str>,
    ) -> Result<Target, TargetError> {
        self.validate(Raw {
            scope: scope.to_owned(),
            id: id.to_owned(),
            metric: metric.to_owned(),
            kind: kind.filter(|k| !k.is_empty()).map(str::to_owned),
            period: period.to_owned(),
            value: serde_json::Value::String(value.to_owned()),
            currency: currency.filter(|c| !c.is_empty()).map(str::to_owned),
        })
    }

    fn validate(&self, r: Raw) -> Result<Target, TargetError> {
        let scope = match r.scope.as_str() {
            "rep" => Scope::Rep,
            "team" => Scope::Team,
            "region" => Scope::Region,
            "org" => Scope::Org,
            s => {
                return Err(bad(
                    "unknown_scope",
                    format!("scope {s:?} is not rep, team, region or org"),
                ))
            }
        };
        let id = if scope == Scope::Org {
            "org".to_owned()
        } else {
            r.id
        };
        if id.trim().is_empty() {
            return Err(bad("empty_id", "id is empty"));
        }
        let metric = TargetMetric::from_name(&r.metric).ok_or_else(|| {
            bad(
                "unknown_metric",
                format!(
                    "metric {:?} is not bookings, deals_won, pipeline_created or activities",
                    r.metric
                ),
            )
        })?;
        let kind = match (metric, r.kind) {
            (TargetMetric::Activities, Some(k)) if self.kinds.contains(&k) => Some(k),
            (TargetMetric::Activities, Some(k)) => {
                return Err(bad("unknown_kind", format!("unknown activity kind {k:?}")))
            }
            (TargetMetric::Activities, None) => {
                return Err(bad("missing_field", "activities targets need a kind"))
            }
            (_, Some(_)) => return Err(bad("wrong_type", "only activities targets have a kind")),
            (_, None) => None,
        };
        let period = Period::parse(&r.period).map_err(|e| bad("invalid_period", e.to_string()))?;
        let text = match &r.value {
            serde_json::Value::String(s) => s.trim().to_owned(),
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(bad("wrong_type", format!("value {other} is not a number"))),
        };
        let value = Decimal::from_str(&text)
            .or_else(|_| Decimal::from_scientific(&text))
            .map_err(|_| bad("invalid_amount", format!("value {text:?} is not a decimal")))?;
        if value.is_sign_negative() && !value.is_zero() {
            return Err(bad("negative_amount", format!("value {value} is negative")));
        }
        let value = if metric.is_money() {
            let currency = r
                .currency
                .unwrap_or_else(|| self.reporting_currency.clone());
            let rate = self.rates.get(&currency).ok_or_else(|| {
                bad(
                    "unknown_currency",
                    format!("currency {currency:?} has no configured rate"),
                )
            })?;
            value
                .checked_mul(*rate)
                .ok_or_else(|| bad("amount_out_of_range", "value out of range"))?
                .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
        } else {
            if r.currency.is_some() {
                return Err(bad("wrong_type", "only money targets have a currency"));
            }
            value
        };
        Ok(Target {
            scope,
            id,
            metric,
            kind,
            period,
            value,
        })
    }
}

impl Target {
    /// The key of this target on `sales.targets`: scope/id/metric[:kind]/period.
    pub fn key(&self) -> String {
        let metric = match &self.kind {
            Some(k) => format!("{}:{k}", self.metric.name()),
            None => self.metric.name().to_owned(),
        };
        format!(
            "{}/{}/{}/{}",
            self.scope.label(),
            self.id,
            metric,
            self.period
        )
    }
}
