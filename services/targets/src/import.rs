//! `salespulse-targets import FILE`: the way a sales-ops manager keeps quotas (a CSV file)
//! into `sales.targets`. Every row is checked first; a file with any bad row writes nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use salespulse_pipeline::kafka::{client_config, ensure_topics, TopicSpec};
use salespulse_pipeline::Settings;
use salespulse_targets::{Target, TargetRules};

/// Columns: scope,id,metric,kind,period,value,currency (kind and currency may be empty).
pub fn read(path: &Path, rules: &TargetRules) -> anyhow::Result<Vec<(Target, serde_json::Value)>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let headers = reader.headers().context("reading the header row")?.clone();
    let want = [
        "scope", "id", "metric", "kind", "period", "value", "currency",
    ];
    if headers.iter().collect::<Vec<_>>() != want {
        bail!(
            "{}: the header row must be {}",
            path.display(),
            want.join(",")
        );
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for rec in reader.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or_default();
                errors.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let line = rec.position().map(|p| p.line()).unwrap_or_default();
        let field = |i: usize| rec.get(i).unwrap_or_default();
        let opt = |i: usize| Some(field(i)).filter(|s| !s.is_empty());
        match rules.from_fields(
            field(0),
            field(1),
            field(2),
            opt(3),
            field(4),
            field(5),
            opt(6),
        ) {
            Ok(t) => {
                let mut v = serde_json::json!({
                    "scope": field(0), "id": t.id, "metric": field(2), "period": field(4), "value": field(5),
                });
                if let Some(k) = opt(3) {
                    v["kind"] = k.into();
                }
                if let Some(c) = opt(6) {
                    v["currency"] = c.into();
                }
                rows.push((t, v));
            }
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{}: {} bad row(s), nothing written:\n  {}",
            path.display(),
            errors.len(),
            errors.join("\n  ")
        );
    }
    Ok(rows)
}

/// Produces every row, keyed by its target key, and waits for each acknowledgement. The rows
/// are all queued before the first acknowledgement is awaited (a whole year's plan is
/// thousands of rows); the idempotent producer keeps them in order.
pub async fn write(
    settings: &Settings,
    rows: Vec<(Target, serde_json::Value)>,
) -> anyhow::Result<usize> {
    let topic = &settings.topics.targets;
    if settings.topics.create {
        ensure_topics(
            settings,
            &[TopicSpec {
                name: topic.clone(),
                partitions: 1,
                compacted: true,
            }],
        )
        .await?;
    }
    let producer: FutureProducer = client_config(settings)
        .set("enable.idempotence", "true")
        .create()
        .context("creating the producer")?;
    let n = rows.len();
    let mut pending = Vec::with_capacity(n);
    for (t, v) in rows {
        let key = t.key();
        let payload = serde_json::to_vec(&v)?;
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing target {key}"))?;
        pending.push((key, delivery));
    }
    for (key, delivery) in pending {
        tokio::time::timeout(Duration::from_secs(30), delivery)
            .await
            .with_context(|| format!("no acknowledgement for target {key}"))?
            .with_context(|| format!("producing target {key}: the producer went away"))?
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing target {key}"))?;
    }
    Ok(n)
}
