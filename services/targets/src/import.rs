//! `salespulse-targets import FILE` and `import-plan FILE`: the way a sales-ops manager keeps
//! quotas and compensation plans (CSV files) into `sales.targets` and `sales.plans`. Every row
//! is checked first; a file with any bad row writes nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use salespulse_pipeline::kafka::{client_config, ensure_topics, TopicSpec};
use salespulse_pipeline::Settings;
use salespulse_targets::{plans_from_rows, PlanRow, TargetRules, PLAN_COLUMNS};

/// Columns: scope,id,metric,kind,period,value,currency (kind and currency may be empty).
/// A record to produce: its key and JSON value.
pub type Record = (String, serde_json::Value);

/// A CSV file whose header row must be `columns`.
fn open(path: &Path, columns: &[&str]) -> anyhow::Result<csv::Reader<std::fs::File>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let headers = reader.headers().context("reading the header row")?.clone();
    if headers.iter().collect::<Vec<_>>() != columns {
        bail!(
            "{}: the header row must be {}",
            path.display(),
            columns.join(",")
        );
    }
    Ok(reader)
}

/// The error of a file with bad rows, each one on its own line.
fn refused(path: &Path, errors: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {} bad row(s), nothing written:\n  {}",
        path.display(),
        errors.len(),
        errors.join("\n  ")
    )
}

pub fn read(path: &Path, rules: &TargetRules) -> anyhow::Result<Vec<Record>> {
    let want = [
        "scope", "id", "metric", "kind", "period", "value", "currency",
    ];
    let mut reader = open(path, &want)?;
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
                rows.push((t.key(), v));
            }
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(refused(path, &errors));
    }
    Ok(rows)
}

/// Columns: see [`PLAN_COLUMNS`]; one row per tier of a plan. Returns one record per rep and
/// plan, keyed `{rep}/{period_type}`.
pub fn read_plans(path: &Path, rules: &TargetRules) -> anyhow::Result<Vec<Record>> {
    let mut reader = open(path, &PLAN_COLUMNS)?;
    let mut rows = Vec::new();
    // Lines the CSV reader itself cannot read (a wrong number of fields), by line.
    let mut errors: Vec<(u64, String)> = Vec::new();
    for rec in reader.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or_default();
                errors.push((line, format!("line {line}: {e}")));
                continue;
            }
        };
        let field = |i: usize| rec.get(i).unwrap_or_default().to_owned();
        rows.push(PlanRow {
            line: rec.position().map(|p| p.line()).unwrap_or_default(),
            plan: field(0),
            reps: field(1),
            otv: field(2),
            currency: field(3),
            metric: field(4),
            period_type: field(5),
            tier_from: field(6),
            tier_to: field(7),
            rate: field(8),
            decelerator_below: field(9),
            decelerator_factor: field(10),
            cap: field(11),
        });
    }
    let plans = match plans_from_rows(&rows, rules) {
        Ok(plans) => plans,
        Err(bad) => {
            errors.extend(
                bad.into_iter()
                    .map(|e| (e.line.unwrap_or_default(), e.to_string())),
            );
            Vec::new()
        }
    };
    if !errors.is_empty() {
        errors.sort();
        let errors: Vec<String> = errors.into_iter().map(|(_, e)| e).collect();
        return Err(refused(path, &errors));
    }
    plans
        .into_iter()
        .map(|(plan, record)| Ok((plan.key(), serde_json::to_value(record)?)))
        .collect()
}

/// Produces every record to `topic` (compacted) and waits for each acknowledgement. The
/// records are all queued before the first acknowledgement is awaited (a whole year's plan is
/// thousands of rows); the idempotent producer keeps them in order.
pub async fn write(settings: &Settings, topic: &str, rows: Vec<Record>) -> anyhow::Result<usize> {
    let topic = &topic.to_owned();
    if settings.topics.create {
        ensure_topics(
            settings,
            &[TopicSpec {
                name: topic.clone(),
                partitions: 1,
                compacted: true,
                segment_ms: None,
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
    for (key, v) in rows {
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
            .with_context(|| format!("producing {key} to {topic}"))?;
        pending.push((key, delivery));
    }
    for (key, delivery) in pending {
        tokio::time::timeout(Duration::from_secs(30), delivery)
            .await
            .with_context(|| format!("no acknowledgement for {key} on {topic}"))?
            .with_context(|| format!("producing {key} to {topic}: the producer went away"))?
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing {key} to {topic}"))?;
    }
    Ok(n)
}
