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
    Encoder::new(format, as_of)
        .value(change)
        .map(<[u8]>::to_vec)
}

/// Encodes the values of one publish. A tick publishes every changed series at once, up to
/// hundreds of thousands: the time they are as of is formatted once, and each JSON value is
/// written from borrowed fields into one buffer, so that a value costs no allocation.
#[derive(Debug)]
pub struct Encoder {
    format: PublishFormat,
    as_of: DateTime<Utc>,
    as_of_text: String,
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new(format: PublishFormat, as_of: DateTime<Utc>) -> Encoder {
        Encoder {
            format,
            as_of,
            as_of_text: as_of.to_rfc3339_opts(SecondsFormat::Millis, true),
            buf: Vec::with_capacity(256),
        }
    }

    /// The value of a change (valid until the next call), or `None` for a tombstone.
    pub fn value(&mut self, change: &Change) -> Option<&[u8]> {
        let s = change.series.as_ref()?;
        self.buf.clear();
        match self.format {
            PublishFormat::Json => {
                let r = RecordRef {
                    scope: s.scope.label(),
                    id: s.id(),
                    team: s.team.as_deref().unwrap_or_default(),
                    metric: s.metric.name(),
                    labels: Labels(s),
                    window: s.window.map(|w| w.label()).unwrap_or_default(),
                    value: s.value,
                    as_of: &self.as_of_text,
                    name: s.name.as_deref().unwrap_or_default(),
                };
                serde_json::to_writer(&mut self.buf, &r).ok()?;
            }
            PublishFormat::Protobuf => {
                let r = MetricRecord::from_series(s, self.as_of);
                pb::MetricValue {
                    scope: r.scope,
                    id: r.id,
                    team: r.team,
                    metric: r.metric,
                    labels: r.labels.into_iter().collect(),
                    window: r.window,
                    value: r.value.to_string(),
                    name: r.name,
                    as_of: Some(prost_types::Timestamp {
                        seconds: self.as_of.timestamp(),
                        nanos: self.as_of.timestamp_subsec_nanos() as i32,
                    }),
                }
                .encode(&mut self.buf)
                .ok()?;
            }
        }
        Some(&self.buf)
    }
}

/// A [`MetricRecord`] borrowed from its series: the same JSON, field for field.
#[derive(Serialize)]
struct RecordRef<'a> {
    scope: &'a str,
    id: &'a str,
    team: &'a str,
    metric: &'a str,
    labels: Labels<'a>,
    window: &'a str,
    value: Decimal,
    as_of: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
}

/// A series' extra labels as a JSON object, by name as [`MetricRecord::labels`] orders them.
struct Labels<'a>(&'a Series);

impl Serialize for Labels<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut pairs = [("", ""); salespulse_aggregate::MAX_EXTRA];
        let mut n = 0;
        for (name, v) in self.0.metric.extra_pairs(&self.0.extra) {
            pairs[n] = (name, &**v);
            n += 1;
        }
        let pairs = &mut pairs[..n];
        pairs.sort_unstable_by_key(|p| p.0);
        let mut map = ser.serialize_map(Some(n))?;
        for (k, v) in pairs.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
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

    /// The borrowed encoding writes what serialising a whole [`MetricRecord`] writes, for every
    /// metric with all its extra labels set (several are not in name order), with and without
    /// a rep's name, and with names that need escaping.
    #[test]
    fn json_values_equal_the_records_they_stand_for() {
        let now = DateTime::from_timestamp(1_795_780_800, 123_000_000).expect("time");
        let mut enc = Encoder::new(PublishFormat::Json, now);
        let mut checked = 0;
        for metric in Metric::ALL {
            for name in [None, Some("Zoë \"Z\" Ng")] {
                let mut extra: salespulse_aggregate::Extra = Default::default();
                for (i, e) in extra
                    .iter_mut()
                    .enumerate()
                    .take(metric.extra_labels().len())
                {
                    *e = Some(Arc::from(format!("v{i}/é")));
                }
                let s = Series {
                    scope: Scope::Rep,
                    metric,
                    rep: Some(Arc::from("rep-1")),
                    team: Some(Arc::from("emea")),
                    region: None,
                    window: Some(Window::Qtd),
                    extra,
                    value: "-1234.5678".parse().expect("decimal"),
                    name: name.map(Arc::from),
                };
                let want = serde_json::to_vec(&MetricRecord::from_series(&s, now)).expect("json");
                let c = Change {
                    key: series_key(&s),
                    series: Some(s),
                };
                assert_eq!(
                    enc.value(&c).map(String::from_utf8_lossy),
                    Some(String::from_utf8_lossy(&want)),
                    "{metric:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * Metric::ALL.len());
    }
}
