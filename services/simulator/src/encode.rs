//! Wire forms of the input contract v1 records, in JSON or protobuf.
//!
//! Every field a malformed record might lack or garble is owned and, for times, optional, so
//! that fault injection can start from a valid record and break exactly one thing.

use chrono::{DateTime, SecondsFormat};
use prost::Message;
use salespulse_decode::pb;
use serde::Serialize;

/// Encoding of record values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    /// Value of the `content-type` header the services read the format from.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => salespulse_decode::PROTOBUF_CONTENT_TYPE,
        }
    }
}

/// A `sales.deals` value. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireDeal {
    pub event_id: String,
    pub deal_id: String,
    pub rep_id: String,
    pub team_id: Option<String>,
    pub stage: String,
    pub amount: String,
    pub currency: String,
    pub created_at: Option<i64>,
    pub occurred_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub expected_close_date: Option<String>,
    /// Absent when the stage's own category applies, as on most CRM records.
    pub forecast_category: Option<String>,
}

/// A `sales.activities` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireActivity {
    pub event_id: String,
    pub rep_id: String,
    pub team_id: Option<String>,
    pub kind: String,
    pub occurred_at: Option<i64>,
    pub deal_id: Option<String>,
    pub duration_seconds: Option<i64>,
}

/// A `sales.roster` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRoster {
    pub rep_id: String,
    pub team_id: String,
    pub name: Option<String>,
    pub active: bool,
    pub region: Option<String>,
    /// `YYYY-MM-DD`.
    pub hired_at: Option<String>,
}

/// RFC 3339 in UTC with a `Z`, fractional seconds only when there are any.
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[derive(Serialize)]
struct DealJson<'a> {
    event_id: &'a str,
    deal_id: &'a str,
    rep_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<&'a str>,
    stage: &'a str,
    amount: &'a str,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_close_date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast_category: Option<&'a str>,
}

#[derive(Serialize)]
struct ActivityJson<'a> {
    event_id: &'a str,
    rep_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<&'a str>,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deal_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<i64>,
}

#[derive(Serialize)]
struct RosterJson<'a> {
    rep_id: &'a str,
    team_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hired_at: Option<&'a str>,
}

// Serializing these plain structs cannot fail: every map key is a string.
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl WireDeal {
    fn json(&self) -> DealJson<'_> {
        DealJson {
            event_id: &self.event_id,
            deal_id: &self.deal_id,
            rep_id: &self.rep_id,
            team_id: self.team_id.as_deref(),
            stage: &self.stage,
            amount: &self.amount,
            currency: &self.currency,
            created_at: self.created_at.map(rfc3339),
            occurred_at: self.occurred_at.map(rfc3339),
            closed_at: self.closed_at.map(rfc3339),
            expected_close_date: self.expected_close_date.as_deref(),
            forecast_category: self.forecast_category.as_deref(),
        }
    }

    pub fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => to_json(&self.json()),
            Format::Protobuf => pb::Deal {
                event_id: self.event_id.clone(),
                deal_id: self.deal_id.clone(),
                rep_id: self.rep_id.clone(),
                team_id: self.team_id.clone(),
                stage: self.stage.clone(),
                amount: self.amount.clone(),
                currency: self.currency.clone(),
                created_at: self.created_at.map(timestamp),
                occurred_at: self.occurred_at.map(timestamp),
                closed_at: self.closed_at.map(timestamp),
                expected_close_date: self.expected_close_date.clone(),
                forecast_category: self.forecast_category.clone(),
            }
            .encode_to_vec(),
        }
    }

    /// JSON without one of its fields.
    pub fn json_without(&self, field: &str) -> Vec<u8> {
        json_without(&self.json(), field)
    }
}

impl WireActivity {
    fn json(&self) -> ActivityJson<'_> {
        ActivityJson {
            event_id: &self.event_id,
            rep_id: &self.rep_id,
            team_id: self.team_id.as_deref(),
            kind: &self.kind,
            occurred_at: self.occurred_at.map(rfc3339),
            deal_id: self.deal_id.as_deref(),
            duration_seconds: self.duration_seconds,
        }
    }

    pub fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => to_json(&self.json()),
            Format::Protobuf => pb::Activity {
                event_id: self.event_id.clone(),
                rep_id: self.rep_id.clone(),
                team_id: self.team_id.clone(),
                kind: self.kind.clone(),
                occurred_at: self.occurred_at.map(timestamp),
                deal_id: self.deal_id.clone(),
                duration_seconds: self.duration_seconds,
            }
            .encode_to_vec(),
        }
    }

    /// JSON without one of its fields.
    pub fn json_without(&self, field: &str) -> Vec<u8> {
        json_without(&self.json(), field)
    }
}

impl WireRoster {
    pub fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => to_json(&RosterJson {
                rep_id: &self.rep_id,
                team_id: &self.team_id,
                name: self.name.as_deref(),
                active: self.active,
                region: self.region.as_deref(),
                hired_at: self.hired_at.as_deref(),
            }),
            Format::Protobuf => pb::RosterEntry {
                rep_id: self.rep_id.clone(),
                team_id: self.team_id.clone(),
                name: self.name.clone(),
                active: Some(self.active),
                region: self.region.clone(),
                hired_at: self.hired_at.clone(),
            }
            .encode_to_vec(),
        }
    }
}

fn json_without<T: Serialize>(v: &T, field: &str) -> Vec<u8> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove(field);
            to_json(&map)
        }
        _ => to_json(v),
    }
}

/// Bytes that no decoder accepts, derived from a valid value so they look plausible.
pub fn garble(valid: &[u8], format: Format, cut: f64) -> Vec<u8> {
    match format {
        // Every proper prefix of a JSON object is unterminated.
        Format::Json => {
            let len = ((valid.len() as f64 * cut) as usize).clamp(1, valid.len().max(2) - 1);
            valid.get(..len).unwrap_or(b"{").to_vec()
        }
        // A prefix of a protobuf message can be a valid message, so instead the first tag is
        // given wire type 7, which does not exist.
        Format::Protobuf => {
            let mut out = valid.to_vec();
            match out.first_mut() {
                Some(b) => *b = 0x0f,
                None => out.push(0x0f),
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_795_774_500_000), "2026-11-27T10:15:00Z");
        assert_eq!(rfc3339(1_795_774_500_250), "2026-11-27T10:15:00.250Z");
    }

    #[test]
    fn optional_fields_are_omitted_from_json() {
        let a = WireActivity {
            event_id: "e1".into(),
            rep_id: "rep-001".into(),
            team_id: None,
            kind: "email".into(),
            occurred_at: Some(1_795_774_500_000),
            deal_id: None,
            duration_seconds: None,
        };
        let json = String::from_utf8(a.encode(Format::Json)).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"event_id":"e1","rep_id":"rep-001","kind":"email","occurred_at":"2026-11-27T10:15:00Z"}"#
        );
        let without = String::from_utf8(a.json_without("kind")).unwrap_or_default();
        assert!(!without.contains("kind"));
    }

    #[test]
    fn a_deal_names_its_forecast_category_only_when_set() {
        let mut d = WireDeal {
            event_id: "e1".into(),
            deal_id: "d1".into(),
            rep_id: "rep-001".into(),
            team_id: None,
            stage: "proposal".into(),
            amount: "1200".into(),
            currency: "USD".into(),
            created_at: Some(1_795_774_500_000),
            occurred_at: Some(1_795_774_500_000),
            closed_at: None,
            expected_close_date: None,
            forecast_category: None,
        };
        let json = String::from_utf8(d.encode(Format::Json)).unwrap_or_default();
        assert!(!json.contains("forecast_category"), "{json}");
        d.forecast_category = Some("commit".into());
        let json = String::from_utf8(d.encode(Format::Json)).unwrap_or_default();
        assert!(
            json.ends_with(r#","forecast_category":"commit"}"#),
            "{json}"
        );
        let m = pb::Deal::decode(d.encode(Format::Protobuf).as_slice()).unwrap_or_default();
        assert_eq!(m.forecast_category.as_deref(), Some("commit"));
    }
}
