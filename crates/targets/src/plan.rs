//! Compensation plans and the commission they pay.
//!
//! A plan pays a rep's on-target variable pay (OTV) by tiers of attainment of a quota (the
//! rep's target for the plan's metric and the current period of the plan's type): each tier
//! pays `rate` × OTV per 100 % of attainment inside it, a decelerator scales the whole payout
//! while attainment is below a threshold, and a cap bounds it at a multiple of OTV.
//!
//! Records of `sales.plans` (compacted), one per rep and period type, key `{rep}/{period_type}`:
//!
//! ```json
//! {"plan":"ae-2026","rep":"rep-007","otv":"20000","currency":"USD","metric":"bookings",
//!  "period_type":"quarter","tiers":[{"from":"0","to":"50","rate":"0.6"},
//!  {"from":"50","to":"100","rate":"1.4"},{"from":"100","rate":"2"}],
//!  "decelerator":{"below":"25","factor":"0.5"},"cap":"2.5"}
//! ```
//!
//! Tier bounds and the decelerator's threshold are percentages of quota; rates, the
//! decelerator's factor and the cap are multiples of OTV. Amounts are decimal strings.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::period::PeriodType;
use crate::target::{TargetMetric, TargetRules};

/// One tier: attainment from `from` % up to `to` % (open-ended when `None`) pays `rate` × OTV
/// per 100 % of attainment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub from: Decimal,
    pub to: Option<Decimal>,
    pub rate: Decimal,
}

/// Below `below` % attainment the whole payout is multiplied by `factor` (0 ≤ factor ≤ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decelerator {
    pub below: Decimal,
    pub factor: Decimal,
}

/// A validated plan of one rep, OTV in the reporting currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub rep: String,
    pub otv: Decimal,
    pub metric: TargetMetric,
    pub period_type: PeriodType,
    /// Contiguous from 0 %, in order; only the last may be open-ended.
    pub tiers: Vec<Tier>,
    pub decelerator: Option<Decelerator>,
    /// Most the plan pays, as a multiple of OTV.
    pub cap: Option<Decimal>,
}

/// The quota metrics a plan may use: those with one target per subject and period.
const PLAN_METRICS: [TargetMetric; 3] = [
    TargetMetric::Bookings,
    TargetMetric::DealsWon,
    TargetMetric::PipelineCreated,
];

/// The period types a plan may use; a week is too short to pay commission on.
const PLAN_PERIODS: [PeriodType; 3] = [PeriodType::Quarter, PeriodType::Month, PeriodType::Year];

impl Plan {
    /// The key of this plan on `sales.plans`: a rep has at most one plan per period type.
    pub fn key(&self) -> String {
        plan_key(&self.rep, self.period_type)
    }

    /// The payout at `attainment` (actual / quota; 1 = 100 %), exact and unrounded; `None`
    /// only when it is beyond the range of a decimal (an uncapped plan at an absurd
    /// attainment, such as a projection moments into a period).
    ///
    /// payout = min(cap × OTV, D × OTV × Σ rate × (min(a, to) − from)⁺ / 100), a in percent,
    /// D = the decelerator's factor while a < its threshold, 1 otherwise.
    pub fn payout(&self, attainment: Decimal) -> Option<Decimal> {
        let percent = attainment
            .checked_mul(Decimal::ONE_HUNDRED)?
            .max(Decimal::ZERO);
        let mut slices = Decimal::ZERO;
        for t in &self.tiers {
            let top = t.to.map_or(percent, |to| to.min(percent));
            if top > t.from {
                slices = slices.checked_add((top - t.from).checked_mul(t.rate)?)?;
            }
        }
        let mut pay = self.otv.checked_mul(slices)? / Decimal::ONE_HUNDRED;
        if let Some(d) = self.decelerator.filter(|d| percent < d.below) {
            pay *= d.factor;
        }
        if let Some(cap) = self.cap {
            // Checked: a cap can be large enough to overflow with OTV, and then it binds nothing.
            if let Some(most) = self.otv.checked_mul(cap) {
                pay = pay.min(most);
            }
        }
        Some(pay)
    }

    /// [`Plan::payout`] rounded to the cent (half away from zero), the only rounding.
    pub fn payout_cents(&self, attainment: Decimal) -> Option<Decimal> {
        self.payout(attainment)
            .map(|p| p.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
    }
}

/// The key of a rep's plan of one period type on `sales.plans`.
pub fn plan_key(rep: &str, period_type: PeriodType) -> String {
    format!("{rep}/{}", period_type.label())
}

/// A plan record that cannot be used: a short `reason` code (the dead-letter header), what is
/// wrong, and the line of the CSV file it comes from (none for a record read from Kafka).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    pub line: Option<u64>,
    pub reason: &'static str,
    pub detail: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

fn bad(line: Option<u64>, reason: &'static str, detail: impl Into<String>) -> PlanError {
    PlanError {
        line,
        reason,
        detail: detail.into(),
    }
}

/// One tier as written on the topic; `line` is where it came from in a CSV file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRecord {
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub rate: String,
    #[serde(skip)]
    pub line: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeceleratorRecord {
    pub below: String,
    pub factor: String,
}

/// A plan record of `sales.plans` as written: amounts as decimal strings, OTV in `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRecord {
    pub plan: String,
    pub rep: String,
    pub otv: String,
    /// Default: the reporting currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Default: bookings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub period_type: String,
    pub tiers: Vec<TierRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decelerator: Option<DeceleratorRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<String>,
}

/// A decimal ≥ 0 from `text`, named `what` in errors.
fn amount(text: &str, what: &str, line: Option<u64>) -> Result<Decimal, PlanError> {
    let v = Decimal::from_str(text.trim()).map_err(|_| {
        bad(
            line,
            "invalid_amount",
            format!("{what} {text:?} is not a decimal"),
        )
    })?;
    if v < Decimal::ZERO {
        return Err(bad(
            line,
            "negative_amount",
            format!("{what} {v} is negative"),
        ));
    }
    Ok(v)
}

impl PlanRecord {
    /// Decodes and validates one record of `sales.plans`.
    pub fn parse(payload: &[u8], rules: &TargetRules) -> Result<Plan, PlanError> {
        let r: PlanRecord = serde_json::from_slice(payload)
            .map_err(|e| bad(None, "invalid_json", e.to_string()))?;
        r.validate(rules, None)
    }

    /// Checks the record and converts OTV to the reporting currency; `line` is where the
    /// plan starts in a CSV file, for errors that are not about one tier.
    pub fn validate(&self, rules: &TargetRules, line: Option<u64>) -> Result<Plan, PlanError> {
        let name = self.plan.trim();
        if name.is_empty() {
            return Err(bad(line, "empty_plan", "the plan has no name"));
        }
        let rep = self.rep.trim();
        if rep.is_empty() {
            return Err(bad(line, "empty_id", "rep is empty"));
        }
        let metric = self.metric(line)?;
        let period_type = PLAN_PERIODS
            .into_iter()
            .find(|p| p.label() == self.period_type.trim())
            .ok_or_else(|| {
                bad(
                    line,
                    "invalid_period_type",
                    format!(
                        "period_type {:?} is not quarter, month or year",
                        self.period_type
                    ),
                )
            })?;
        Ok(Plan {
            name: name.to_owned(),
            rep: rep.to_owned(),
            otv: self.otv(rules, line)?,
            metric,
            period_type,
            tiers: tiers(&self.tiers, line)?,
            decelerator: self.decelerator(line)?,
            cap: self.cap(line)?,
        })
    }

    fn metric(&self, line: Option<u64>) -> Result<TargetMetric, PlanError> {
        let Some(m) = self
            .metric
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        else {
            return Ok(TargetMetric::Bookings);
        };
        TargetMetric::from_name(m)
            .filter(|m| PLAN_METRICS.contains(m))
            .ok_or_else(|| {
                bad(
                    line,
                    "unknown_metric",
                    format!("quota metric {m:?} is not bookings, deals_won or pipeline_created"),
                )
            })
    }

    /// OTV in the reporting currency, rounded to the cent as a target amount is.
    fn otv(&self, rules: &TargetRules, line: Option<u64>) -> Result<Decimal, PlanError> {
        let otv = amount(&self.otv, "otv", line)?;
        let currency = self
            .currency
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(&rules.reporting_currency);
        let rate = rules.rates.get(currency).ok_or_else(|| {
            bad(
                line,
                "unknown_currency",
                format!("currency {currency:?} has no configured rate"),
            )
        })?;
        otv.checked_mul(*rate)
            .map(|v| v.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
            .ok_or_else(|| bad(line, "amount_out_of_range", "otv out of range"))
    }

    fn decelerator(&self, line: Option<u64>) -> Result<Option<Decelerator>, PlanError> {
        let Some(d) = &self.decelerator else {
            return Ok(None);
        };
        let below = amount(&d.below, "decelerator_below", line)?;
        let factor = amount(&d.factor, "decelerator_factor", line)?;
        if factor > Decimal::ONE {
            return Err(bad(
                line,
                "invalid_decelerator",
                format!("decelerator_factor {factor} is above 1 (a decelerator only reduces)"),
            ));
        }
        Ok(Some(Decelerator { below, factor }))
    }

    fn cap(&self, line: Option<u64>) -> Result<Option<Decimal>, PlanError> {
        let Some(text) = self.cap.as_deref().filter(|c| !c.trim().is_empty()) else {
            return Ok(None);
        };
        let cap = amount(text, "cap", line)?;
        if cap.is_zero() {
            return Err(bad(
                line,
                "invalid_cap",
                "cap 0 pays nothing; leave it empty for no cap",
            ));
        }
        Ok(Some(cap))
    }
}

/// The tiers, sorted by their start: they must cover 0 % upwards without gap or overlap, and
/// only the last may be open-ended.
fn tiers(records: &[TierRecord], plan_line: Option<u64>) -> Result<Vec<Tier>, PlanError> {
    if records.is_empty() {
        return Err(bad(plan_line, "invalid_tiers", "the plan has no tier"));
    }
    let mut tiers = Vec::with_capacity(records.len());
    for r in records {
        let line = r.line.or(plan_line);
        let from = amount(&r.from, "tier_from", line)?;
        let to = match r.to.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => Some(amount(t, "tier_to", line)?),
            None => None,
        };
        if to.is_some_and(|to| to <= from) {
            return Err(bad(
                line,
                "invalid_tiers",
                format!(
                    "tier_to {} is not above tier_from {from}",
                    r.to.as_deref().unwrap_or_default()
                ),
            ));
        }
        let rate = amount(&r.rate, "rate", line)?;
        tiers.push((line, Tier { from, to, rate }));
    }
    tiers.sort_by_key(|(_, t)| t.from);
    let mut reach = Some(Decimal::ZERO);
    for (line, t) in &tiers {
        match reach {
            Some(end) if t.from == end => reach = t.to,
            Some(end) => {
                let what = if t.from > end { "leaves a gap after" } else { "overlaps the tier before, which ends at" };
                return Err(bad(
                    *line,
                    "invalid_tiers",
                    format!("the tier from {} % {what} {end} %", t.from),
                ));
            }
            None => {
                return Err(bad(
                    *line,
                    "invalid_tiers",
                    format!("the tier from {} % follows an open-ended tier (only the last may have no tier_to)", t.from),
                ))
            }
        }
    }
    Ok(tiers.into_iter().map(|(_, t)| t).collect())
}

/// One row of a plan CSV file, as text (see docs/targets.md): one row per tier, the plan's
/// own columns on any of its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanRow {
    pub line: u64,
    pub plan: String,
    pub reps: String,
    pub otv: String,
    pub currency: String,
    pub metric: String,
    pub period_type: String,
    pub tier_from: String,
    pub tier_to: String,
    pub rate: String,
    pub decelerator_below: String,
    pub decelerator_factor: String,
    pub cap: String,
}

/// The columns of a plan CSV file, in order.
pub const PLAN_COLUMNS: [&str; 12] = [
    "plan",
    "reps",
    "otv",
    "currency",
    "metric",
    "period_type",
    "tier_from",
    "tier_to",
    "rate",
    "decelerator_below",
    "decelerator_factor",
    "cap",
];

/// A plan's own column, as the rows give it: empty on every row, or the same wherever given.
fn column<'a>(
    rows: &[&'a PlanRow],
    name: &str,
    get: impl Fn(&'a PlanRow) -> &'a str,
) -> Result<Option<String>, PlanError> {
    let mut first: Option<(&str, u64)> = None;
    for r in rows {
        let v = get(r).trim();
        if v.is_empty() {
            continue;
        }
        match first {
            None => first = Some((v, r.line)),
            Some((f, l)) if f != v => {
                return Err(bad(
                    Some(r.line),
                    "conflicting_value",
                    format!(
                        "plan {:?}: {name} {v:?} differs from {f:?} on line {l}",
                        r.plan.trim()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|(v, _)| v.to_owned()))
}

/// The reps a plan's rows name, each with the line that first names it.
fn reps(rows: &[&PlanRow]) -> BTreeMap<String, u64> {
    let mut reps = BTreeMap::new();
    for r in rows {
        for rep in r.reps.split(|c: char| c == ';' || c.is_whitespace()) {
            if !rep.is_empty() {
                reps.entry(rep.to_owned()).or_insert(r.line);
            }
        }
    }
    reps
}

/// The record of one plan's rows (rows of one plan name), for its first rep.
fn plan_record(rows: &[&PlanRow]) -> Result<PlanRecord, PlanError> {
    let first = rows[0];
    let need = |name: &str, v: Option<String>| {
        v.ok_or_else(|| {
            bad(
                Some(first.line),
                "missing_field",
                format!("plan {:?}: no {name} on any of its rows", first.plan.trim()),
            )
        })
    };
    let below = column(rows, "decelerator_below", |r| &r.decelerator_below)?;
    let factor = column(rows, "decelerator_factor", |r| &r.decelerator_factor)?;
    let decelerator = match (below, factor) {
        (Some(below), Some(factor)) => Some(DeceleratorRecord { below, factor }),
        (None, None) => None,
        _ => {
            return Err(bad(
                Some(first.line),
                "invalid_decelerator",
                format!(
                    "plan {:?}: a decelerator needs both decelerator_below and decelerator_factor",
                    first.plan.trim()
                ),
            ))
        }
    };
    let tiers = rows
        .iter()
        .map(|r| TierRecord {
            from: r.tier_from.clone(),
            to: Some(r.tier_to.clone()).filter(|t| !t.trim().is_empty()),
            rate: r.rate.clone(),
            line: Some(r.line),
        })
        .collect();
    Ok(PlanRecord {
        plan: first.plan.trim().to_owned(),
        rep: String::new(),
        otv: need("otv", column(rows, "otv", |r| &r.otv)?)?,
        currency: column(rows, "currency", |r| &r.currency)?,
        metric: column(rows, "metric", |r| &r.metric)?,
        period_type: need(
            "period_type",
            column(rows, "period_type", |r| &r.period_type)?,
        )?,
        tiers,
        decelerator,
        cap: column(rows, "cap", |r| &r.cap)?,
    })
}

/// Every rep's plan from the rows of a CSV file, or every error found (each naming its line):
/// a file with any bad row loads nothing. A rep may be on one plan per period type.
pub fn plans_from_rows(
    rows: &[PlanRow],
    rules: &TargetRules,
) -> Result<Vec<(Plan, PlanRecord)>, Vec<PlanError>> {
    let mut errors = Vec::new();
    // Plans in the order they first appear.
    let mut names: Vec<&str> = Vec::new();
    let mut by_name: HashMap<&str, Vec<&PlanRow>> = HashMap::new();
    for r in rows {
        let name = r.plan.trim();
        if name.is_empty() {
            errors.push(bad(Some(r.line), "empty_plan", "the row names no plan"));
            continue;
        }
        by_name
            .entry(name)
            .or_insert_with(|| {
                names.push(name);
                Vec::new()
            })
            .push(r);
    }
    let mut out = Vec::new();
    let mut taken: HashMap<(String, PeriodType), (String, u64)> = HashMap::new();
    for name in names {
        let rows = &by_name[name];
        match plan_for_reps(rows, rules) {
            Ok(plans) => {
                for (plan, record, line) in plans {
                    let slot = (plan.rep.clone(), plan.period_type);
                    if let Some((other, at)) = taken.get(&slot) {
                        errors.push(bad(
                            Some(line),
                            "duplicate_plan",
                            format!(
                                "rep {:?} is on plan {other:?} (line {at}) and plan {name:?}, both for period type {}",
                                plan.rep,
                                plan.period_type.label()
                            ),
                        ));
                        continue;
                    }
                    taken.insert(slot, (name.to_owned(), line));
                    out.push((plan, record));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// One plan's rows, validated once, then one plan per rep with the line naming the rep.
fn plan_for_reps(
    rows: &[&PlanRow],
    rules: &TargetRules,
) -> Result<Vec<(Plan, PlanRecord, u64)>, PlanError> {
    let first = rows[0].line;
    let reps = reps(rows);
    let Some(some_rep) = reps.keys().next() else {
        return Err(bad(
            Some(first),
            "missing_field",
            format!("plan {:?}: no rep in its reps column", rows[0].plan.trim()),
        ));
    };
    let mut record = plan_record(rows)?;
    record.rep = some_rep.clone();
    let plan = record.validate(rules, Some(first))?;
    Ok(reps
        .into_iter()
        .map(|(rep, line)| {
            let plan = Plan {
                rep: rep.clone(),
                ..plan.clone()
            };
            (
                plan,
                PlanRecord {
                    rep,
                    ..record.clone()
                },
                line,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests;
