use std::borrow::Cow;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::ForecastCategory;

/// A validated deal record. Times are Unix milliseconds; `amount` is already converted into
/// the reporting currency and rounded to the cent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealEvent<'a> {
    pub event_id: Cow<'a, str>,
    pub deal_id: Cow<'a, str>,
    pub rep_id: Cow<'a, str>,
    pub team_id: Option<Cow<'a, str>>,
    /// Index into [`crate::Contract::stages`].
    pub stage: u8,
    pub amount: Decimal,
    pub created_at: i64,
    pub occurred_at: i64,
    pub closed_at: Option<i64>,
    pub expected_close_date: Option<NaiveDate>,
    /// The record's own forecast category, or the stage's when it names none.
    pub forecast_category: ForecastCategory,
}

/// A validated activity record. `occurred_at` is in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityEvent<'a> {
    pub event_id: Cow<'a, str>,
    pub rep_id: Cow<'a, str>,
    pub team_id: Option<Cow<'a, str>>,
    /// Index into [`crate::Contract::kinds`].
    pub kind: u8,
    pub occurred_at: i64,
    pub deal_id: Option<Cow<'a, str>>,
    pub duration_seconds: Option<i64>,
}

/// A change of the roster: a rep joins or moves team, or leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterEvent {
    Upsert {
        rep_id: String,
        team_id: String,
        name: Option<String>,
        region: Option<String>,
        hired_at: Option<NaiveDate>,
    },
    Remove {
        rep_id: String,
    },
}

impl RosterEvent {
    pub fn rep_id(&self) -> &str {
        match self {
            RosterEvent::Upsert { rep_id, .. } | RosterEvent::Remove { rep_id } => rep_id,
        }
    }
}
