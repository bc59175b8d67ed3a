//! Wire forms of the records (JSON structs borrowing from the payload, generated protobuf
//! types) and the one validation path both go through.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate};
use prost::Message;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::{
    pb, ActivityEvent, Contract, DealEvent, DecodeError, ForecastCategory, Format, Reason,
    RosterEvent,
};

/// 0001-01-01 would be representable, but nothing in a sales org predates the Unix epoch;
/// rejecting it keeps every time a non-negative millisecond count.
const MIN_MS: i64 = 0;
/// 9999-12-31T23:59:59Z.
const MAX_MS: i64 = 253_402_300_799_000;
/// Longest accepted name of a rep (bytes).
const MAX_NAME_BYTES: usize = 256;

/// An amount as it appeared on the wire, before it is checked.
#[derive(Debug)]
enum AmountRepr<'a> {
    Text(Cow<'a, str>),
    Float(f64),
    Int(i128),
}

impl<'de: 'a, 'a> Deserialize<'de> for AmountRepr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AmountRepr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(AmountRepr::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AmountRepr::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AmountRepr::Float(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AmountRepr::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AmountRepr::Int(v.into()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct JsonDeal<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    deal_id: Cow<'a, str>,
    #[serde(borrow)]
    rep_id: Cow<'a, str>,
    #[serde(borrow, default)]
    team_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stage: Cow<'a, str>,
    #[serde(borrow)]
    amount: AmountRepr<'a>,
    #[serde(borrow)]
    currency: Cow<'a, str>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(borrow, default)]
    closed_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    expected_close_date: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    forecast_category: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct JsonActivity<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    rep_id: Cow<'a, str>,
    #[serde(borrow, default)]
    team_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(borrow, default)]
    deal_id: Option<Cow<'a, str>>,
    #[serde(default)]
    duration_seconds: Option<i64>,
}

#[derive(Deserialize)]
struct JsonRoster {
    rep_id: String,
    team_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    hired_at: Option<String>,
}

/// A time as it appeared on the wire.
enum Ts<'a> {
    Text(&'a str),
    Proto(Option<&'a prost_types::Timestamp>),
}

impl Contract {
    fn check_payload(&self, payload: &[u8]) -> Result<(), DecodeError> {
        if payload.is_empty() {
            return Err(DecodeError::new(
                Reason::EmptyPayload,
                "record has no value",
            ));
        }
        if payload.len() > self.max_payload_bytes {
            return Err(DecodeError::new(
                Reason::PayloadTooLarge,
                format!("{} bytes, limit {}", payload.len(), self.max_payload_bytes),
            ));
        }
        Ok(())
    }

    fn id<'a>(&self, field: &str, v: Cow<'a, str>) -> Result<Cow<'a, str>, DecodeError> {
        if v.is_empty() {
            return Err(DecodeError::new(
                Reason::EmptyId,
                format!("{field} is empty"),
            ));
        }
        if v.len() > self.max_id_bytes {
            return Err(DecodeError::new(
                Reason::IdTooLong,
                format!("{field} is {} bytes, limit {}", v.len(), self.max_id_bytes),
            ));
        }
        Ok(v)
    }

    fn opt_id<'a>(
        &self,
        field: &str,
        v: Option<Cow<'a, str>>,
    ) -> Result<Option<Cow<'a, str>>, DecodeError> {
        v.map(|v| self.id(field, v)).transpose()
    }

    fn key_matches(&self, key: Option<&[u8]>, field: &str, id: &str) -> Result<(), DecodeError> {
        match key {
            Some(k) if !k.is_empty() && k != id.as_bytes() => Err(DecodeError::new(
                Reason::KeyMismatch,
                format!(
                    "record key {:?} differs from {field} {id:?}",
                    String::from_utf8_lossy(k)
                ),
            )),
            _ => Ok(()),
        }
    }

    fn time(&self, field: &str, ts: Ts<'_>, now_ms: i64) -> Result<i64, DecodeError> {
        let ms = match ts {
            Ts::Text(s) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    DecodeError::new(
                        Reason::InvalidTimestamp,
                        format!("{field} {s:?} is not RFC 3339: {e}"),
                    )
                })?
                .timestamp_millis(),
            Ts::Proto(None) => {
                return Err(DecodeError::new(
                    Reason::MissingField,
                    format!("missing field `{field}`"),
                ))
            }
            Ts::Proto(Some(t)) => {
                if !(0..1_000_000_000).contains(&t.nanos) {
                    return Err(DecodeError::new(
                        Reason::InvalidTimestamp,
                        format!("{field} has nanos {} out of range", t.nanos),
                    ));
                }
                t.seconds
                    .checked_mul(1000)
                    .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000)))
                    .ok_or_else(|| {
                        DecodeError::new(Reason::InvalidTimestamp, format!("{field} overflows"))
                    })?
            }
        };
        if !(MIN_MS..=MAX_MS).contains(&ms) {
            return Err(DecodeError::new(
                Reason::InvalidTimestamp,
                format!("{field} is outside 1970-01-01..9999-12-31"),
            ));
        }
        if ms > now_ms.saturating_add(self.max_future_skew_ms) {
            return Err(DecodeError::new(
                Reason::FutureTimestamp,
                format!(
                    "{field} is {} s in the future, limit {} s",
                    (ms - now_ms) / 1000,
                    self.max_future_skew_ms / 1000
                ),
            ));
        }
        Ok(ms)
    }

    /// Converts an amount into the reporting currency, exact to the cent.
    fn amount(&self, raw: AmountRepr<'_>, currency: &str) -> Result<Decimal, DecodeError> {
        let out_of_range = || DecodeError::new(Reason::AmountOutOfRange, "amount out of range");
        let amount = match raw {
            AmountRepr::Text(s) => {
                let s = s.trim();
                let parsed = if s.contains(['e', 'E']) {
                    Decimal::from_scientific(s)
                } else {
                    Decimal::from_str(s)
                };
                parsed.map_err(|e| {
                    // A number too large for a decimal is out of range, not malformed.
                    if s.parse::<f64>().is_ok_and(f64::is_finite) {
                        DecodeError::new(
                            Reason::AmountOutOfRange,
                            format!("amount {s:?} is out of range"),
                        )
                    } else {
                        DecodeError::new(
                            Reason::InvalidAmount,
                            format!("amount {s:?} is not a decimal: {e}"),
                        )
                    }
                })?
            }
            AmountRepr::Float(f) if !f.is_finite() => {
                return Err(DecodeError::new(
                    Reason::InvalidAmount,
                    "amount is not finite",
                ))
            }
            AmountRepr::Float(f) if f.abs() > 1e20 => return Err(out_of_range()),
            // Display gives the shortest text that reads back as the same f64, so a JSON
            // number such as 0.1 becomes exactly 0.1, not its binary approximation.
            AmountRepr::Float(f) => {
                Decimal::from_str(&f.to_string()).map_err(|_| out_of_range())?
            }
            AmountRepr::Int(i) => i64::try_from(i)
                .map(Decimal::from)
                .map_err(|_| out_of_range())?,
        };
        if amount < Decimal::ZERO {
            return Err(DecodeError::new(
                Reason::NegativeAmount,
                format!("amount {amount} is negative"),
            ));
        }
        if amount > self.max_amount {
            return Err(DecodeError::new(
                Reason::AmountOutOfRange,
                format!("amount {amount} exceeds {}", self.max_amount),
            ));
        }
        let rate = self.rate(currency).ok_or_else(|| {
            DecodeError::new(
                Reason::UnknownCurrency,
                format!("currency {currency:?} has no configured rate"),
            )
        })?;
        let converted = amount.checked_mul(rate).ok_or_else(out_of_range)?;
        Ok(converted.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
    }

    /// Decodes and validates a `sales.deals` record.
    pub fn decode_deal<'a>(
        &self,
        key: Option<&[u8]>,
        payload: &'a [u8],
        format: Format,
        now_ms: i64,
    ) -> Result<DealEvent<'a>, DecodeError> {
        self.check_payload(payload)?;
        match format {
            Format::Json => {
                let r: JsonDeal<'a> = json(payload)?;
                let closed_at = r.closed_at.as_deref().map(Ts::Text);
                let expected = r.expected_close_date.as_deref();
                let ev = self.deal(
                    DealParts {
                        event_id: r.event_id,
                        deal_id: r.deal_id,
                        rep_id: r.rep_id,
                        team_id: r.team_id,
                        stage: &r.stage,
                        currency: &r.currency,
                        created_at: Ts::Text(&r.created_at),
                        occurred_at: Ts::Text(&r.occurred_at),
                        closed_at,
                        expected_close_date: expected,
                        forecast_category: r.forecast_category.as_deref(),
                    },
                    r.amount,
                    now_ms,
                )?;
                self.key_matches(key, "deal_id", &ev.deal_id)?;
                Ok(ev)
            }
            Format::Protobuf => self.with_deal(key, payload, format, now_ms, |ev| {
                into_owned_deal(ev.clone())
            }),
        }
    }

    /// Decodes and validates a `sales.deals` record and hands it to `f` without copying its
    /// strings, whichever the encoding.
    pub fn with_deal<R>(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
        f: impl FnOnce(&DealEvent<'_>) -> R,
    ) -> Result<R, DecodeError> {
        match format {
            Format::Json => self
                .decode_deal(key, payload, format, now_ms)
                .map(|ev| f(&ev)),
            Format::Protobuf => {
                self.check_payload(payload)?;
                let m = pb::Deal::decode(payload).map_err(|e| {
                    DecodeError::new(Reason::InvalidProtobuf, format!("not a Deal message: {e}"))
                })?;
                let ev = self.deal(
                    DealParts {
                        event_id: Cow::Borrowed(&m.event_id),
                        deal_id: Cow::Borrowed(&m.deal_id),
                        rep_id: Cow::Borrowed(&m.rep_id),
                        team_id: m.team_id.as_deref().map(Cow::Borrowed),
                        stage: &m.stage,
                        currency: &m.currency,
                        created_at: Ts::Proto(m.created_at.as_ref()),
                        occurred_at: Ts::Proto(m.occurred_at.as_ref()),
                        closed_at: m.closed_at.as_ref().map(|t| Ts::Proto(Some(t))),
                        expected_close_date: m.expected_close_date.as_deref(),
                        forecast_category: m.forecast_category.as_deref(),
                    },
                    AmountRepr::Text(Cow::Borrowed(&m.amount)),
                    now_ms,
                )?;
                self.key_matches(key, "deal_id", &ev.deal_id)?;
                Ok(f(&ev))
            }
        }
    }

    /// Decodes and validates a `sales.activities` record and hands it to `f` without copying
    /// its strings, whichever the encoding.
    pub fn with_activity<R>(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
        f: impl FnOnce(&ActivityEvent<'_>) -> R,
    ) -> Result<R, DecodeError> {
        match format {
            Format::Json => self
                .decode_activity(key, payload, format, now_ms)
                .map(|ev| f(&ev)),
            Format::Protobuf => {
                self.check_payload(payload)?;
                let m = pb::Activity::decode(payload).map_err(|e| {
                    DecodeError::new(
                        Reason::InvalidProtobuf,
                        format!("not an Activity message: {e}"),
                    )
                })?;
                let occurred_at =
                    self.time("occurred_at", Ts::Proto(m.occurred_at.as_ref()), now_ms)?;
                let ev = self.activity(
                    Cow::Borrowed(&m.event_id),
                    Cow::Borrowed(&m.rep_id),
                    m.team_id.as_deref().map(Cow::Borrowed),
                    &m.kind,
                    occurred_at,
                    m.deal_id.as_deref().map(Cow::Borrowed),
                    m.duration_seconds,
                )?;
                self.key_matches(key, "rep_id", &ev.rep_id)?;
                Ok(f(&ev))
            }
        }
    }

    fn deal<'a>(
        &self,
        p: DealParts<'a, '_>,
        amount: AmountRepr<'_>,
        now_ms: i64,
    ) -> Result<DealEvent<'a>, DecodeError> {
        let stage = self.stage_index(p.stage).ok_or_else(|| {
            DecodeError::new(Reason::UnknownStage, format!("unknown stage {:?}", p.stage))
        })?;
        let created_at = self.time("created_at", p.created_at, now_ms)?;
        let occurred_at = self.time("occurred_at", p.occurred_at, now_ms)?;
        let closed = self.stages()[usize::from(stage)].kind != crate::StageKind::Open;
        let closed_at = match p.closed_at {
            Some(ts) if closed => Some(self.time("closed_at", ts, now_ms)?),
            _ => None,
        };
        if closed_at.is_some_and(|c| c < created_at) {
            return Err(DecodeError::new(
                Reason::ClosedBeforeCreated,
                "closed_at is before created_at",
            ));
        }
        let expected_close_date = p
            .expected_close_date
            .map(|s| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .or_else(|_| DateTime::parse_from_rfc3339(s).map(|d| d.date_naive()))
                    .map_err(|_| {
                        DecodeError::new(
                            Reason::InvalidTimestamp,
                            format!("expected_close_date {s:?} is not a date"),
                        )
                    })
            })
            .transpose()?;
        let forecast_category = match p.forecast_category {
            None => self.stages()[usize::from(stage)].forecast_category,
            Some(c) => ForecastCategory::from_label(c).ok_or_else(|| {
                DecodeError::new(
                    Reason::UnknownForecastCategory,
                    format!(
                        "unknown forecast_category {c:?}, expected pipeline, best_case, commit, omitted or closed"
                    ),
                )
            })?,
        };
        Ok(DealEvent {
            event_id: self.id("event_id", p.event_id)?,
            deal_id: self.id("deal_id", p.deal_id)?,
            rep_id: self.id("rep_id", p.rep_id)?,
            team_id: self.opt_id("team_id", p.team_id)?,
            amount: self.amount(amount, p.currency)?,
            stage,
            created_at,
            occurred_at,
            closed_at,
            expected_close_date,
            forecast_category,
        })
    }

    /// Decodes and validates a `sales.activities` record.
    pub fn decode_activity<'a>(
        &self,
        key: Option<&[u8]>,
        payload: &'a [u8],
        format: Format,
        now_ms: i64,
    ) -> Result<ActivityEvent<'a>, DecodeError> {
        self.check_payload(payload)?;
        let ev = match format {
            Format::Json => {
                let r: JsonActivity<'a> = json(payload)?;
                let occurred_at = self.time("occurred_at", Ts::Text(&r.occurred_at), now_ms)?;
                self.activity(
                    r.event_id,
                    r.rep_id,
                    r.team_id,
                    &r.kind,
                    occurred_at,
                    r.deal_id,
                    r.duration_seconds,
                )?
            }
            Format::Protobuf => {
                return self.with_activity(key, payload, format, now_ms, |ev| {
                    into_owned_activity(ev.clone())
                });
            }
        };
        self.key_matches(key, "rep_id", &ev.rep_id)?;
        Ok(ev)
    }

    #[allow(clippy::too_many_arguments)]
    fn activity<'a>(
        &self,
        event_id: Cow<'a, str>,
        rep_id: Cow<'a, str>,
        team_id: Option<Cow<'a, str>>,
        kind: &str,
        occurred_at: i64,
        deal_id: Option<Cow<'a, str>>,
        duration_seconds: Option<i64>,
    ) -> Result<ActivityEvent<'a>, DecodeError> {
        let kind_idx = self.kind_index(kind).ok_or_else(|| {
            DecodeError::new(
                Reason::UnknownKind,
                format!("unknown activity kind {kind:?}"),
            )
        })?;
        if duration_seconds.is_some_and(|d| d < 0) {
            return Err(DecodeError::new(
                Reason::WrongType,
                "duration_seconds must not be negative",
            ));
        }
        Ok(ActivityEvent {
            event_id: self.id("event_id", event_id)?,
            rep_id: self.id("rep_id", rep_id)?,
            team_id: self.opt_id("team_id", team_id)?,
            kind: kind_idx,
            occurred_at,
            deal_id: self.opt_id("deal_id", deal_id)?,
            duration_seconds,
        })
    }

    /// Decodes a `sales.roster` record. A record without a value (a tombstone) removes the
    /// rep named by its key.
    pub fn decode_roster(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        format: Format,
    ) -> Result<RosterEvent, DecodeError> {
        let Some(payload) = payload.filter(|p| !p.is_empty()) else {
            let rep = key
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let rep_id = self.id("key", Cow::Owned(rep))?.into_owned();
            return Ok(RosterEvent::Remove { rep_id });
        };
        self.check_payload(payload)?;
        let (rep_id, team_id, name, active, region, hired_at) = match format {
            Format::Json => {
                let r: JsonRoster = json(payload)?;
                (r.rep_id, r.team_id, r.name, r.active, r.region, r.hired_at)
            }
            Format::Protobuf => {
                let m = pb::RosterEntry::decode(payload).map_err(|e| {
                    DecodeError::new(
                        Reason::InvalidProtobuf,
                        format!("not a RosterEntry message: {e}"),
                    )
                })?;
                (m.rep_id, m.team_id, m.name, m.active, m.region, m.hired_at)
            }
        };
        let rep_id = self.id("rep_id", Cow::Owned(rep_id))?.into_owned();
        self.key_matches(key, "rep_id", &rep_id)?;
        if active == Some(false) {
            return Ok(RosterEvent::Remove { rep_id });
        }
        let team_id = self.id("team_id", Cow::Owned(team_id))?.into_owned();
        let region = region
            .map(|r| self.id("region", Cow::Owned(r)).map(Cow::into_owned))
            .transpose()?;
        let name = name.filter(|n| !n.trim().is_empty());
        if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
            return Err(DecodeError::new(
                Reason::IdTooLong,
                format!("name is longer than {MAX_NAME_BYTES} bytes"),
            ));
        }
        let hired_at = hired_at
            .map(|s| {
                NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| {
                    DecodeError::new(
                        Reason::InvalidTimestamp,
                        format!("hired_at {s:?} is not a date (YYYY-MM-DD)"),
                    )
                })
            })
            .transpose()?;
        Ok(RosterEvent::Upsert {
            rep_id,
            team_id,
            name,
            region,
            hired_at,
        })
    }
}

struct DealParts<'a, 'b> {
    event_id: Cow<'a, str>,
    deal_id: Cow<'a, str>,
    rep_id: Cow<'a, str>,
    team_id: Option<Cow<'a, str>>,
    stage: &'b str,
    currency: &'b str,
    created_at: Ts<'b>,
    occurred_at: Ts<'b>,
    closed_at: Option<Ts<'b>>,
    expected_close_date: Option<&'b str>,
    forecast_category: Option<&'b str>,
}

/// Parses a JSON record. The payload is checked for UTF-8 once, as text, which is cheaper
/// than serde_json checking each string of a byte slice on its own; either way a record
/// that is not UTF-8 is not JSON.
fn json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| DecodeError::new(Reason::InvalidJson, format!("not UTF-8 text: {e}")))?;
    serde_json::from_str(text).map_err(|e| DecodeError::from_json(&e))
}

fn owned(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

fn into_owned_deal(e: DealEvent<'_>) -> DealEvent<'static> {
    DealEvent {
        event_id: owned(e.event_id),
        deal_id: owned(e.deal_id),
        rep_id: owned(e.rep_id),
        team_id: e.team_id.map(owned),
        stage: e.stage,
        amount: e.amount,
        created_at: e.created_at,
        occurred_at: e.occurred_at,
        closed_at: e.closed_at,
        expected_close_date: e.expected_close_date,
        forecast_category: e.forecast_category,
    }
}

fn into_owned_activity(e: ActivityEvent<'_>) -> ActivityEvent<'static> {
    ActivityEvent {
        event_id: owned(e.event_id),
        rep_id: owned(e.rep_id),
        team_id: e.team_id.map(owned),
        kind: e.kind,
        occurred_at: e.occurred_at,
        deal_id: e.deal_id.map(owned),
        duration_seconds: e.duration_seconds,
    }
}
