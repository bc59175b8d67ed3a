//! The targets service loop: `sales.metrics`, `sales.targets` and `sales.plans` in, targets,
//! pace, leaderboards and commission estimates out on `/metrics`.
//!
//! The inputs are compacted and small next to the raw event topics, so the service rebuilds
//! its state by reading them from the beginning at every start; its group's committed offsets
//! only mark which target and plan records were already dead-lettered.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::{Gauge, LabelPair, Metric as PromMetric, MetricFamily, MetricType};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_aggregate::{Scope, Window};
use salespulse_expose::{AppState, Board, Health};
use salespulse_targets::{
    Actual, Elapsed, EventTopic, Expected, Notifier, Out, Period, PeriodType, PlanRecord, Rollup,
    TargetMetric, TargetRules, TargetsBoard, Ticker,
};
use tracing::{info, warn};

use crate::config::Settings;
use crate::kafka::{client_config, ensure_topics, partitions, TopicSpec};
use crate::run::{format_of, now_ms, read_to_end, settle};
use crate::Error;

/// Help text of each family the targets service exposes.
fn help(family: &str) -> &'static str {
    let suffix = family.rsplit_once('_').map(|(_, s)| s).unwrap_or_default();
    match family {
        "sales_period_elapsed_ratio" => {
            "Share of the current period of each type elapsed (business days unless configured otherwise)."
        }
        "sales_rep_rank" => {
            "Rank of the rep (1 = top) within its team or the org, per metric and window."
        }
        "sales_rep_team_share" => "The rep's share of its team's total, per metric and window.",
        "sales_region_rank" => {
            "Rank of the region (1 = top) among the regions, per metric and window; equal totals share a rank."
        }
        "sales_rep_commission_earned" => {
            "Commission earned to date under the rep's compensation plan: its payout at attainment to date of the plan's quota for the current period (reporting currency, to the cent)."
        }
        "sales_rep_commission_projected" => {
            "Commission the rep's compensation plan pays at its projected attainment (run rate: actual / elapsed share) for the current period (reporting currency, to the cent)."
        }
        "sales_rep_ramp_ratio" => {
            "Share of the full target a rep in ramp carries for the current period (mean over the period's days of the ramp schedule's share by month of tenure, 0 before hired_at); absent once fully ramped. Its targets, attainment, pace, gap, projection, commission and alerts use the ramped target."
        }
        "sales_celebration_timestamp_seconds" => {
            "When one of today's newest celebrations on sales.celebrations happened (a big win's close, else when it was decided), by celebration id, with a headline for the ticker."
        }
        "sales_celebration_amount" => {
            "Amount of a big win among today's newest celebrations (reporting currency)."
        }
        _ if family.ends_with("_reps_attaining") => {
            "Reps whose current-quarter bookings reach the threshold (percent) of their target, among the reps with such a target (by roster team)."
        }
        _ if family.ends_with("_reps_attaining_ratio") => {
            "Share of the reps with a current-quarter bookings target whose bookings reach the threshold (percent) of it."
        }
        _ if family.ends_with("_attainment_median") => {
            "Median current-quarter bookings attainment (actual / target) of the reps with such a target; the mean of the middle two for an even count."
        }
        _ if family.ends_with("_attainment_ratio") => "Actual / target for the period.",
        _ if family.ends_with("_expected_to_date") => "Target x elapsed share of the period.",
        _ if family.ends_with("_pace_ratio") => "Actual / expected to date.",
        _ if family.ends_with("_projected") => "Run-rate projection: actual / elapsed share.",
        _ if family.ends_with("_forecast") => {
            "Actual + weighted open pipeline expected to close in the period (bookings)."
        }
        _ if family.ends_with("_pipeline_coverage") => {
            "Open pipeline expected to close in the period / remaining gap (bookings)."
        }
        _ if family.ends_with("_forecast_coverage") => {
            "Forecast rollup of the deals service for the current month or quarter / the bookings target of the period."
        }
        _ if family.ends_with("_activities_per_win") => {
            "Activities of every kind / deals won in the window; absent without a win."
        }
        _ => match suffix {
            "target" => "Target for the current period of its type (the others stay stored), in the reporting currency for amounts.",
            "gap" => "Target - actual, floored at 0.",
            _ => "salespulse targets metric.",
        },
    }
}

fn families(out: Vec<Out>) -> Vec<MetricFamily> {
    let mut by_family: std::collections::BTreeMap<String, Vec<PromMetric>> = Default::default();
    for o in out {
        let mut m = PromMetric::default();
        m.set_label(
            o.labels
                .into_iter()
                .map(|(n, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(n.to_owned());
                    l.set_value(v);
                    l
                })
                .collect(),
        );
        let mut g = Gauge::default();
        g.set_value(o.value);
        m.set_gauge(g);
        by_family.entry(o.family).or_default().push(m);
    }
    by_family
        .into_iter()
        .map(|(name, metrics)| {
            let mut f = MetricFamily::default();
            f.set_help(help(&name).to_owned());
            f.set_name(name);
            f.set_field_type(MetricType::GAUGE);
            f.set_metric(metrics);
            f
        })
        .collect()
}

/// What a `sales.metrics` record means to the targets, if anything.
enum Input {
    Actual(Actual),
    Expected(Expected),
    Rollup(Rollup),
    /// A rep and the team the roster puts it in.
    Member(String, String),
    /// A rep's roster info: its hiring date, if the roster gives one.
    Info(String, Option<chrono::NaiveDate>),
}

fn input(m: &BorrowedMessage<'_>, format: salespulse_publish::PublishFormat) -> Option<Input> {
    input_of(salespulse_publish::decode(
        m.payload()?,
        format_of(m, format),
    )?)
}

fn input_of(r: salespulse_publish::MetricRecord) -> Option<Input> {
    let scope = match r.scope.as_str() {
        "rep" => Scope::Rep,
        "team" => Scope::Team,
        "region" => Scope::Region,
        "org" => Scope::Org,
        _ => return None,
    };
    if scope == Scope::Rep && r.metric == salespulse_aggregate::Metric::Member.name() {
        return Some(Input::Member(r.id, r.team));
    }
    if scope == Scope::Rep && r.metric == salespulse_aggregate::Metric::Info.name() {
        let hired = r
            .labels
            .get("hired_at")
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        return Some(Input::Info(r.id, hired));
    }
    let weighted = match r.metric.as_str() {
        "pipeline_expected" => Some(false),
        "weighted_pipeline_expected" => Some(true),
        _ => None,
    };
    if let Some(weighted) = weighted {
        let period_type = PeriodType::ALL
            .into_iter()
            .find(|p| r.labels.get("period_type").map(String::as_str) == Some(p.label()))?;
        return Some(Input::Expected(Expected {
            scope,
            id: r.id,
            period_type,
            weighted,
            value: r.value,
        }));
    }
    if r.metric == "forecast_rollup" {
        let period = Period::parse(r.labels.get("period")?).ok()?;
        if r.labels.get("period_type").map(String::as_str) != Some(period.kind.label()) {
            return None;
        }
        return Some(Input::Rollup(Rollup {
            scope,
            id: r.id,
            rollup: r.labels.get("rollup")?.clone(),
            period,
            value: r.value,
        }));
    }
    let metric = TargetMetric::from_name(&r.metric)?;
    Some(Input::Actual(Actual {
        scope,
        id: r.id,
        team: r.team,
        metric,
        kind: r.labels.get("kind").cloned(),
        window: Window::from_label(&r.window)?,
        value: r.value,
    }))
}

/// Applies one record of `sales.targets` or (`plan`) `sales.plans`: a tombstone deletes its
/// key's value, and so does an unusable record (the latest record of a key is the one that
/// counts), whose reason code and detail are returned for the dead-letter topic.
fn apply_setting(
    board: &mut TargetsBoard,
    plan: bool,
    key: &str,
    payload: Option<&[u8]>,
    rules: &TargetRules,
) -> Result<(), (&'static str, String)> {
    let Some(payload) = payload else {
        if plan {
            board.set_plan(key, None);
        } else {
            board.set_target(key, None);
        }
        return Ok(());
    };
    if plan {
        let parsed = PlanRecord::parse(payload, rules);
        let error = parsed.as_ref().err().map(|e| (e.reason, e.detail.clone()));
        board.set_plan(key, parsed.ok());
        return error.map_or(Ok(()), Err);
    }
    let parsed = rules.parse(payload);
    let error = parsed.as_ref().err().map(|e| (e.reason, e.detail.clone()));
    board.set_target(key, parsed.ok());
    error.map_or(Ok(()), Err)
}

/// Runs the targets service until `shutdown` resolves.
pub async fn run_targets(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let svc = settings.targets.clone();
    let rules = settings.target_rules()?;
    let cal = settings.calendar()?;
    let elapsed = Elapsed::new(
        cal,
        settings.calendar.business_days,
        settings.calendar.holidays.clone(),
    );
    let t = &settings.topics;

    let health = Health::new("targets");
    let ready = Arc::new(AtomicBool::new(false));
    let app = AppState {
        board: Arc::new(Board::default()),
        health: health.clone(),
        ready: ready.clone(),
        snapshot: Arc::default(),
    };
    let snapshot = app.snapshot.clone();
    let http = crate::run::serve_http(svc.listen, app, "targets").await?;
    // Serve /healthz (alive) and /readyz (not ready) while the cluster is unreachable.
    tokio::pin!(shutdown);
    if !crate::kafka::wait_for_cluster(&settings, &mut shutdown).await? {
        http.abort();
        return Ok(());
    }
    if t.create {
        ensure_topics(
            &settings,
            &[
                TopicSpec {
                    name: t.targets.clone(),
                    partitions: 1,
                    compacted: true,
                },
                TopicSpec {
                    name: t.plans.clone(),
                    partitions: 1,
                    compacted: true,
                },
                TopicSpec {
                    name: t.alerts.clone(),
                    partitions: 1,
                    compacted: true,
                },
                TopicSpec {
                    name: t.celebrations.clone(),
                    partitions: 1,
                    compacted: true,
                },
                TopicSpec {
                    name: t.metrics.clone(),
                    partitions: t.partitions,
                    compacted: true,
                },
                TopicSpec {
                    name: t.deadletter.clone(),
                    partitions: t.partitions,
                    compacted: false,
                },
            ],
        )
        .await?;
    }
    let producer: FutureProducer = client_config(&settings)
        .set("enable.idempotence", "true")
        .create()
        .map_err(|e| Error::kafka("creating the producer", e))?;
    // What was already announced: events are new only against what their topics hold.
    let mut notifier = Notifier::new(settings.alerts.clone());
    read_to_end(&settings, &t.alerts, |key, value| {
        let v = value.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok());
        notifier.restore_alert(key, v.as_ref());
    })
    .await?;
    read_to_end(&settings, &t.celebrations, |key, _| {
        notifier.restore_celebration(key)
    })
    .await?;
    info!(
        firing = notifier.firing(),
        "restored alert states and sent celebrations"
    );
    let alert_counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "salespulse_announcements_total",
            "Alert and celebration records produced, by topic and kind.",
        ),
        &["topic", "kind"],
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    health
        .registry
        .register(Box::new(alert_counter.clone()))
        .map_err(|e| Error::Config(e.to_string()))?;
    let consumer: StreamConsumer = client_config(&settings)
        .set("group.id", &svc.group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| Error::kafka("creating the consumer", e))?;
    // Where dead-lettering stopped last time: target and plan records below it were reported
    // already.
    let mut tpl = TopicPartitionList::new();
    for topic in [&t.targets, &t.plans] {
        for p in partitions(&consumer, topic)? {
            tpl.add_partition(topic, p);
        }
    }
    let reported: HashMap<(String, i32), i64> = crate::kafka::committed_offsets(&consumer, &tpl)?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect();
    // One consumer over the four topics, every partition from its beginning.
    let mut assign = TopicPartitionList::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in [&t.metrics, &t.targets, &t.plans, &t.celebrations] {
        for p in partitions(&consumer, topic)? {
            assign
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| Error::kafka("assigning partitions", e))?;
            let (low, high) = crate::kafka::watermarks(&consumer, topic, p)?;
            if high > low {
                ends.insert((topic.clone(), p), high);
            }
        }
    }
    consumer
        .assign(&assign)
        .map_err(|e| Error::kafka("assigning partitions", e))?;

    let mut board = TargetsBoard::default();
    board.set_ramp(settings.ramp()?);
    let mut ticker = Ticker::new(settings.alerts.celebrations_shown, cal);
    let mut pending: Vec<DeliveryFuture> = Vec::new();
    // Per target and plan partition: the offset after the last record read.
    let mut next_setting: HashMap<(String, i32), i64> = HashMap::new();
    let applied = |topic: &str| health.events.with_label_values(&[topic, "applied"]);
    let metrics_counters = (applied(&t.metrics), applied(&t.targets), applied(&t.plans));
    let celebrations_read = applied(&t.celebrations);
    let mut tick = tokio::time::interval(Duration::from_millis(settings.publish.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let format = settings.publish.format;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let now = now_ms().div_euclid(1000);
                let mut outs = board.series(now, &cal, &elapsed);
                // Settle first: an event is decided only against what earlier ones delivered.
                settle(&mut pending).await?;
                // Until both inputs are read to their end the board is partial; alerts and
                // celebrations decided on it would be wrong.
                if ends.is_empty() {
                    for ev in notifier.evaluate(&outs, now) {
                        let (topic, kind) = match ev.topic {
                            EventTopic::Alerts => (&t.alerts, ev.value["state"].as_str().unwrap_or_default().to_owned()),
                            EventTopic::Celebrations => (&t.celebrations, ev.value["celebration"].as_str().unwrap_or_default().to_owned()),
                        };
                        info!(topic = %topic, key = %ev.key, "announcing");
                        alert_counter.with_label_values(&[topic.as_str(), kind.as_str()]).inc();
                        let payload = serde_json::to_vec(&ev.value).unwrap_or_default();
                        let headers = OwnedHeaders::new().insert(Header { key: "content-type", value: Some("application/json") });
                        let rec = FutureRecord::to(topic).key(&ev.key).payload(&payload).headers(headers);
                        match producer.send_result(rec) {
                            Ok(f) => pending.push(f),
                            Err((e, _)) => return Err(Error::kafka("producing an event", e)),
                        }
                    }
                    settle(&mut pending).await?;
                }
                outs.extend(ticker.series(now));
                let fams = families(outs);
                if let Ok(mut s) = snapshot.write() {
                    *s = Arc::new(fams);
                }
                let mut tpl = TopicPartitionList::new();
                for ((topic, p), o) in &next_setting {
                    if reported.get(&(topic.clone(), *p)).is_none_or(|r| o > r) {
                        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
                    }
                }
                if tpl.count() > 0 {
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                        warn!(error = %e, "offset commit failed; retried on the next tick");
                    }
                }
                health.state.with_label_values(&["targets"]).set(board.targets() as i64);
                health.state.with_label_values(&["plans"]).set(board.plans() as i64);
                let caught_up = ends.is_empty();
                ready.store(caught_up, Ordering::Relaxed);
                health.ready.set(i64::from(caught_up));
            }
            m = consumer.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "consumer error");
                        continue;
                    }
                };
                let (topic, p, offset) = (m.topic().to_owned(), m.partition(), m.offset());
                if ends.get(&(topic.clone(), p)).is_some_and(|end| offset + 1 >= *end) {
                    ends.remove(&(topic.clone(), p));
                }
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
                if topic == t.celebrations {
                    // Read back, this service's own included: the ticker shows what
                    // subscribers received.
                    ticker.apply(key, m.payload(), now_ms().div_euclid(1000));
                    celebrations_read.inc();
                    continue;
                }
                if topic == t.metrics {
                    // A key keeps its metric, so a tombstone clears whichever map holds it.
                    match input(&m, format) {
                        Some(Input::Actual(a)) => board.set_actual(key, Some(a)),
                        Some(Input::Expected(e)) => board.set_expected(key, Some(e)),
                        Some(Input::Rollup(r)) => board.set_rollup(key, Some(r)),
                        Some(Input::Member(rep, team)) => board.set_member(key, Some((rep, team))),
                        Some(Input::Info(rep, hired)) => board.set_hired(key, hired.map(|h| (rep, h))),
                        None => {
                            board.set_actual(key, None);
                            board.set_expected(key, None);
                            board.set_rollup(key, None);
                            board.set_member(key, None);
                            board.set_hired(key, None);
                        }
                    }
                    metrics_counters.0.inc();
                    continue;
                }
                next_setting.insert((topic.clone(), p), offset + 1);
                let is_plan = topic == t.plans;
                match apply_setting(&mut board, is_plan, key, m.payload(), &rules) {
                    Ok(()) if is_plan => metrics_counters.2.inc(),
                    Ok(()) => metrics_counters.1.inc(),
                    Err((reason, detail)) => {
                        if reported.get(&(topic.clone(), p)).is_some_and(|r| offset < *r) {
                            continue;
                        }
                        let what = if is_plan { "plan" } else { "target" };
                        warn!(topic = %topic, partition = p, offset, reason, detail = %detail, "rejected {what} record, sent to the dead-letter topic");
                        health.events.with_label_values(&[topic.as_str(), "rejected"]).inc();
                        health.rejected.with_label_values(&[topic.as_str(), reason]).inc();
                        let payload = m.payload().unwrap_or_default();
                        let (ps, os) = (p.to_string(), offset.to_string());
                        let headers = OwnedHeaders::new()
                            .insert(Header { key: "reason", value: Some(reason) })
                            .insert(Header { key: "reason.detail", value: Some(&detail) })
                            .insert(Header { key: "source.topic", value: Some(topic.as_str()) })
                            .insert(Header { key: "source.partition", value: Some(&ps) })
                            .insert(Header { key: "source.offset", value: Some(&os) })
                            .insert(Header { key: "service", value: Some("targets") });
                        let rec = FutureRecord::to(&t.deadletter).key(key).payload(payload).headers(headers);
                        match producer.send_result(rec) {
                            Ok(f) => pending.push(f),
                            Err((e, _)) => return Err(Error::kafka("producing a dead letter", e)),
                        }
                    }
                }
            }
        }
    }
    ready.store(false, Ordering::Relaxed);
    settle(&mut pending).await?;
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    http.abort();
    info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metric: &str, labels: &[(&str, &str)]) -> salespulse_publish::MetricRecord {
        salespulse_publish::MetricRecord {
            scope: "rep".into(),
            id: "a".into(),
            team: "x".into(),
            metric: metric.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            window: String::new(),
            value: "540.5".parse().expect("decimal"),
            as_of: String::new(),
            name: String::new(),
        }
    }

    #[test]
    fn a_forecast_rollup_record_is_read_with_its_period() {
        let r = record(
            "forecast_rollup",
            &[
                ("rollup", "best_case"),
                ("period_type", "quarter"),
                ("period", "2026-Q4"),
            ],
        );
        match input_of(r) {
            Some(Input::Rollup(r)) => {
                assert_eq!(r.scope, Scope::Rep);
                assert_eq!(r.id, "a");
                assert_eq!(r.rollup, "best_case");
                assert_eq!(r.period, Period::parse("2026-Q4").expect("valid"));
                assert_eq!(r.value.to_string(), "540.5");
            }
            _ => panic!("not a rollup"),
        }
        // A period that is not of its period_type, or no period, is not used.
        let mismatched = record(
            "forecast_rollup",
            &[
                ("rollup", "commit"),
                ("period_type", "month"),
                ("period", "2026-Q4"),
            ],
        );
        assert!(input_of(mismatched).is_none());
        let undated = record(
            "forecast_rollup",
            &[("rollup", "commit"), ("period_type", "month")],
        );
        assert!(input_of(undated).is_none());
        // The per-category forecast is not the rollup.
        let forecast = record(
            "forecast",
            &[
                ("category", "commit"),
                ("period_type", "month"),
                ("period", "2026-11"),
            ],
        );
        assert!(input_of(forecast).is_none());
    }

    #[test]
    fn a_bad_plan_record_leaves_its_key_without_a_plan() {
        let rules = TargetRules {
            kinds: Default::default(),
            reporting_currency: "USD".into(),
            rates: [("USD".to_owned(), rust_decimal::Decimal::ONE)]
                .into_iter()
                .collect(),
        };
        let mut board = TargetsBoard::default();
        let good = br#"{"plan":"p","rep":"a","otv":"1000","period_type":"quarter","tiers":[{"from":"0","rate":"1"}]}"#;
        assert_eq!(
            apply_setting(&mut board, true, "a/quarter", Some(good), &rules),
            Ok(())
        );
        assert_eq!(board.plans(), 1);
        let err = apply_setting(&mut board, true, "a/quarter", Some(b"{}"), &rules);
        assert_eq!(err.map_err(|e| e.0), Err("invalid_json"));
        assert_eq!(board.plans(), 0);
        apply_setting(&mut board, true, "a/quarter", Some(good), &rules).expect("valid");
        apply_setting(&mut board, true, "a/quarter", None, &rules).expect("tombstone");
        assert_eq!(board.plans(), 0);
        // A target record is read as a target, not as a plan.
        let err = apply_setting(&mut board, false, "a/quarter", Some(good), &rules);
        assert_eq!(err.map_err(|e| e.0), Err("invalid_json"));
    }

    #[test]
    fn the_new_families_have_their_own_help() {
        for scope in ["rep", "team", "org"] {
            assert!(help(&format!("sales_{scope}_forecast_coverage")).contains("Forecast rollup"));
            assert!(help(&format!("sales_{scope}_activities_per_win")).contains("deals won"));
        }
        assert!(help("sales_rep_forecast").starts_with("Actual + weighted"));
        // Not the run-rate projection of a target, whose suffix it shares.
        assert!(help("sales_rep_commission_projected").starts_with("Commission the rep's"));
        assert!(help("sales_rep_commission_earned").starts_with("Commission earned"));
        for scope in ["team", "org"] {
            assert!(help(&format!("sales_{scope}_reps_attaining")).starts_with("Reps whose"));
            assert!(help(&format!("sales_{scope}_reps_attaining_ratio")).starts_with("Share"));
            assert!(help(&format!("sales_{scope}_attainment_median")).starts_with("Median"));
        }
    }
}
