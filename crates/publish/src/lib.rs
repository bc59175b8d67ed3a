//! The `sales.metrics` topic: what other services read to rebuild the board.
//!
//! Key: `scope/id/metric/labels/window` (see [`salespulse_aggregate::series_key`]). Value: a
//! [`MetricRecord`] as JSON (default) or as the protobuf `salespulse.v1.MetricValue`; an empty
//! value (tombstone) when the series no longer exists. The topic is compacted, so its latest
//! record per key is the current board.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message;
use rust_decimal::Decimal;
use salespulse_aggregate::{Change, Series};
use salespulse_decode::pb;
use serde::{Deserialize, Serialize};

/// Encoding of the values written to `sales.metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishFormat {
    Json,
    Protobuf,
}

impl PublishFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            PublishFormat::Json => "application/json",
            PublishFormat::Protobuf => salespulse_decode::PROTOBUF_CONTENT_TYPE,
        }
    }
}

/// One value of one series, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub scope: String,
    pub id: String,
    /// Team of the series; empty for the org.
    pub team: String,
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    /// Window label; empty for current-state metrics.
    pub window: String,
    /// Exact decimal value.
    pub value: Decimal,
    pub as_of: String,
    /// The rep's name on the roster (rep records only; empty when the roster names none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl MetricRecord {
    pub fn from_series(s: &Series, as_of: DateTime<Utc>) -> MetricRecord {
        let mut labels = BTreeMap::new();
        for (name, v) in s.metric.extra_pairs(&s.extra) {
            labels.insert(name.to_owned(), v.to_string());
        }
        MetricRecord {
            scope: s.scope.label().to_owned(),
            id: s.id().to_owned(),
            team: s.team.as_deref().unwrap_or_default().to_owned(),
            metric: s.metric.name().to_owned(),
            labels,
            window: s.window.map(|w| w.label()).unwrap_or_default().to_owned(),
            value: s.value,
            as_of: as_of.to_rfc3339_opts(SecondsFormat::Millis, true),
            name: s.name.as_deref().unwrap_or_default().to_owned(),
        }
    }
}

/// Encodes the value of a change; `None` is a tombstone.
pub fn encode(change: &Change, format: PublishFormat, as_of: DateTime<Utc>) -> Option<Vec<u8>> {
    let s = change.series.as_ref()?;
    let r = MetricRecord::from_series(s, as_of);
    Some(match format {
        PublishFormat::Json => serde_json::to_vec(&r).unwrap_or_default(),
        PublishFormat::Protobuf => pb::MetricValue {
            scope: r.scope,
            id: r.id,
            team: r.team,
            metric: r.metric,
            labels: r.labels.into_iter().collect(),
            window: r.window,
            value: r.value.to_string(),
            name: r.name,
            as_of: Some(prost_types::Timestamp {
                seconds: as_of.timestamp(),
                nanos: as_of.timestamp_subsec_nanos() as i32,
            }),
        }
        .encode_to_vec(),
    })
}

/// Decodes a value written by [`encode`] (either format).
pub fn decode(payload: &[u8], format: PublishFormat) -> Option<MetricRecord> {
    match format {
        PublishFormat::Json => serde_json::from_slice(payload).ok(),
        PublishFormat::Protobuf => {
            let m = pb::MetricValue::decode(payload).ok()?;
            Some(MetricRecord {
                scope: m.scope,
                id: m.id,
                team: m.team,
                metric: m.metric,
                labels: m.labels.into_iter().collect(),
                window: m.window,
                value: m.value.parse().ok()?,
                as_of: m
                    .as_of
                    .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
                    .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                name: m.name,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use salespulse_aggregate::{series_key, Metric, Scope, Window};

    use super::*;

    #[test]
    fn both_formats_round_trip_exact_values() {
        let s = Series {
            scope: Scope::Team,
            metric: Metric::Activities,
            rep: None,
            team: Some(Arc::from("emea")),
            region: None,
            window: Some(Window::Wtd),
            extra: [Some(Arc::from("call")), None, None],
            value: "12345678901234567.89".parse().expect("decimal"),
            name: None,
        };
        let c = Change {
            key: series_key(&s),
            series: Some(s),
        };
        let now = DateTime::from_timestamp(1_795_780_800, 0).expect("time");
        for f in [PublishFormat::Json, PublishFormat::Protobuf] {
            let bytes = encode(&c, f, now).expect("a value");
            let r = decode(&bytes, f).expect("decodes");
            assert_eq!(r.value.to_string(), "12345678901234567.89");
            assert_eq!(r.labels.get("kind").map(String::as_str), Some("call"));
            assert_eq!(r.window, "wtd");
            assert_eq!(r.as_of, "2026-11-27T12:00:00.000Z");
        }
        let tomb = Change {
            key: c.key,
            series: None,
        };
        assert!(encode(&tomb, PublishFormat::Json, now).is_none());
    }
}
