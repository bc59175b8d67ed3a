//! The targets service loop: `sales.metrics`, `sales.targets` and `sales.plans` in, targets,
//! pace, leaderboards and commission estimates out on `/metrics`.
//!
//! The inputs are compacted and small next to the raw event topics, so the service rebuilds
//! its state by reading them from the beginning at every start; its group's committed offsets
//! only mark which target and plan records were already dead-lettered.
//!
//! Each tick's alerts, celebrations and dead letters commit in one Kafka transaction with
//! those offsets. An aborted transaction leaves the decisions it held off the topics, so the
//! loop starts over from them, as at a start.
//!
//! One instance of a group serves; others stand by. Which one is decided by Kafka's group
//! protocol: the instances join the group `<targets.group_id>-targets-active` on the slots
//! topic, and the member assigned slot 0 holds the lease. Its transactions commit under that
//! group's metadata, so the broker refuses a commit from a holder the group has moved on from
//! (paused or cut off past its session), and nothing it decided after that reaches a topic. A
//! standby takes the lease over when the holder dies (after `session.timeout.ms`, 10 s) or
//! stops, and starts from the topics as at a start.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_aggregate::{Calendar, Scope, Window};
use salespulse_expose::{AppState, Board, Exposed, Health};
use salespulse_targets::{
    Actual, Elapsed, EventTopic, Expected, Notifier, Out, Period, PeriodType, PlanRecord, Rollup,
    TargetMetric, TargetRules, TargetsBoard, Ticker,
};
use tracing::{info, warn};

use crate::config::Settings;
use crate::coordination::ownership::{Ownership, SlotsContext, LEADER_SLOT};
use crate::events::{Announced, ConsumerReplaced, InternalEvent, TransactionEnded};
use crate::kafka::{client_config, ensure_topics, partitions, TopicSpec};
use crate::run::now_ms;
use crate::sink::transaction::GIVE_UP_AFTER;
use crate::sink::transaction::{transactional_id, Ended};
use crate::sink::{create_producer, settle, Outputs};
use crate::source::offsets::GroupOffsets;
use crate::source::watch::Watch;
use crate::source::{format_of, read_to_end};
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

/// The exposition text of a tick's series: families by name, each family's series in the
/// order the board gave them; those of a window or metric `[expose]` leaves out are not
/// written.
pub fn exposition(outs: Vec<Out>, exposed: &Exposed) -> Vec<u8> {
    fn label<'o>(o: &'o Out, name: &str) -> Option<&'o str> {
        o.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
    let narrowed = !exposed.windows.is_empty() || !exposed.metrics.is_empty();
    let shown =
        |o: &Out| !narrowed || exposed.admits_labels(label(o, "window"), label(o, "metric"));
    // Grouped without sorting the series: a family's come mostly one after another.
    let mut families: Vec<(&str, Vec<&Out>)> = Vec::new();
    let mut place: HashMap<&str, usize> = HashMap::new();
    let mut last: Option<(&str, usize)> = None;
    for o in outs.iter().filter(|o| shown(o)) {
        let at = match last {
            Some((family, at)) if family == o.family => at,
            _ => *place.entry(o.family.as_str()).or_insert_with(|| {
                families.push((o.family.as_str(), Vec::new()));
                families.len() - 1
            }),
        };
        families[at].1.push(o);
        last = Some((o.family.as_str(), at));
    }
    families.sort_unstable_by_key(|(family, _)| *family);
    let mut text = Vec::with_capacity(outs.len() * 96);
    for (family, series) in families {
        salespulse_expose::text::gauge_header(&mut text, family, help(family));
        for o in series {
            salespulse_expose::text::sample(&mut text, family, &o.labels, o.value);
        }
    }
    text
}

/// The series of a tick in the `prometheus` crate's structures, which its encoder writes as
/// [`exposition`] must.
#[cfg(test)]
fn families(out: Vec<Out>) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::proto::{Gauge, LabelPair, Metric as PromMetric, MetricFamily, MetricType};
    let mut by_family: std::collections::BTreeMap<String, Vec<PromMetric>> = Default::default();
    for o in out {
        let mut m = PromMetric::default();
        m.set_label(
            o.labels
                .into_iter()
                .map(|(n, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(n.to_owned());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        let mut g = Gauge::default();
        g.set_value(o.value);
        m.set_gauge(g);
        by_family.entry(o.family.to_string()).or_default().push(m);
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
    let health = Health::new(SERVICE);
    let ready = Arc::new(AtomicBool::new(false));
    let app = AppState {
        board: Arc::new(Board::default()),
        health: health.clone(),
        ready: ready.clone(),
        snapshot: Arc::default(),
    };
    let exposed = app.snapshot.clone();
    let board = app.board.clone();
    let http = crate::run::serve_http(settings.targets.listen, app, SERVICE).await?;
    // Serve /healthz (alive) and /readyz (not ready) while the cluster is unreachable.
    tokio::pin!(shutdown);
    if !crate::kafka::wait_for_cluster(&settings, &mut shutdown).await? {
        http.abort();
        return Ok(());
    }
    if settings.topics.create {
        ensure_topics(&settings, &targets_topics(&settings)).await?;
    }
    let lease = Lease::join(&settings, board, &health)?;
    // Set when a run first ends in an abort, cleared by one that committed: aborts that go
    // on for longer than GIVE_UP_AFTER stop the service.
    let mut failing_since = None;
    let stopped = loop {
        if !lease.wait(&mut shutdown).await {
            break Ok(());
        }
        let served = serve(&settings, &health, &exposed, &ready, &lease, &mut shutdown).await;
        ready.store(false, Ordering::Relaxed);
        health.ready.set(0);
        match served {
            Ok(Served::Stopped) => break Ok(()),
            Ok(Served::LeaseLost) => failing_since = None,
            Ok(Served::StartOver { committed }) => {
                if committed {
                    failing_since = None;
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    break Err(Error::Config(
                        "no transaction committed for five minutes".into(),
                    ));
                }
            }
            Err(e) => match TransactionEnded::starting_over(&e) {
                Some(ended) => ended.emit(&health),
                None => break Err(e),
            },
        }
    };
    http.abort();
    if stopped.is_ok() {
        info!("stopped cleanly");
    }
    stopped
}

/// How one run of the loop ended.
enum Served {
    Stopped,
    /// Another instance holds the lease now; this one's open transaction was aborted.
    LeaseLost,
    /// Its open transaction was aborted; `committed` tells whether one committed before.
    StartOver {
        committed: bool,
    },
}

/// Rebuilds the state from the topics, then serves until `shutdown` resolves or a
/// transaction is aborted.
async fn serve(
    settings: &Settings,
    health: &Health,
    exposed: &salespulse_expose::Snapshot,
    ready: &AtomicBool,
    lease: &Lease,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Served, Error> {
    let id = transactional_id(&settings.targets.group_id, SERVICE);
    let producer = create_producer(settings, Some(&id))?;
    tokio::task::block_in_place(|| crate::sink::transaction::init(&producer))?;
    let (mut me, consumer, mut watch) = Targets::start(settings, health, &producer, lease).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(settings.publish.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            biased;
            _ = &mut *shutdown => break,
            _ = tick.tick() => {
                if !lease.held() {
                    // What the open transaction holds was decided without the lease.
                    tokio::task::block_in_place(|| crate::sink::transaction::abort(&producer))?;
                    TransactionEnded {
                        outcome: "aborted",
                        why: Some("the lease was given up"),
                    }
                    .emit(health);
                    info!("gave up the lease: standing by");
                    return Ok(Served::LeaseLost);
                }
                let stalled = tokio::task::block_in_place(|| watch.check(&consumer, health));
                if !stalled.is_empty() {
                    tokio::task::block_in_place(|| crate::sink::transaction::abort(&producer))?;
                    ConsumerReplaced {
                        consumer: "targets",
                        what: "the targets service's consumer",
                        partitions: &stalled,
                        stalled_for: watch.stalled_for(),
                    }
                    .emit(health);
                    return Ok(me.start_over("the consumer stood still behind the end"));
                }
                let step = me.on_tick(exposed).await;
                let caught_up = me.caught_up();
                ready.store(caught_up, Ordering::Relaxed);
                health.ready.set(i64::from(caught_up));
                step
            }
            m = consumer.recv() => match m {
                Ok(m) => me.on_record(&m).await.map(|()| Ended::Committed),
                // The deals service's topics are transactional: their last offset is often a
                // commit marker, never delivered, so the end is known from reaching it.
                Err(KafkaError::PartitionEOF(p)) => {
                    me.reached_end_of(p, &consumer);
                    Ok(Ended::Committed)
                }
                Err(e) => {
                    warn!(error = %e, "consumer error");
                    Ok(Ended::Committed)
                }
            },
        };
        match step {
            Ok(Ended::Committed) => {}
            Ok(Ended::Aborted) => return Ok(me.start_over("the commit was refused")),
            Err(e) => return me.produce_failed(e),
        }
    }
    ready.store(false, Ordering::Relaxed);
    match me.commit().await {
        Ok(Ended::Committed) => {}
        // A restart then reports again the rejects read since the last commit.
        Ok(Ended::Aborted) => warn!("the last transaction was aborted at shutdown"),
        Err(e) => warn!(error = %e, "committing at shutdown failed"),
    }
    Ok(Served::Stopped)
}

const SERVICE: &str = "targets";

/// The topics the targets service reads and writes, created when missing.
fn targets_topics(settings: &Settings) -> Vec<TopicSpec> {
    let t = &settings.topics;
    let spec = |name: &str, partitions: i32, compacted: bool| TopicSpec {
        name: name.to_owned(),
        partitions,
        compacted,
        segment_ms: None,
    };
    vec![
        spec(&t.targets, 1, true),
        spec(&t.plans, 1, true),
        spec(&t.alerts, 1, true),
        spec(&t.celebrations, 1, true),
        spec(&t.metrics, t.partitions, true),
        spec(&t.deadletter, t.partitions, false),
        spec(&t.slots, t.slot_count, false),
    ]
}

/// A (topic, partition) position.
type At = (String, i32);

/// This instance's place in the group that decides which targets instance serves.
struct Lease {
    consumer: rdkafka::consumer::BaseConsumer<SlotsContext>,
    ownership: Ownership,
}

impl Lease {
    fn join(settings: &Settings, board: Arc<Board>, health: &Health) -> Result<Self, Error> {
        let ownership = Ownership::default();
        let group = format!("{}-{SERVICE}-active", settings.targets.group_id);
        let context = SlotsContext {
            ownership: ownership.clone(),
            board,
            health: health.clone(),
        };
        // Members named by when they joined, oldest first: the instance serving keeps the
        // lease when another joins (the assignor hands slot 0 to the first member by name),
        // rather than starting over for each instance that comes up.
        let joined = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let client_id = format!("salespulse-{SERVICE}-{joined:016}");
        let consumer =
            crate::coordination::ownership::join(settings, &group, context, Some(&client_id))?;
        Ok(Lease {
            consumer,
            ownership,
        })
    }

    /// Serves the group's callbacks; whether this instance holds the lease and has not given
    /// it up since it was last asked.
    fn held(&self) -> bool {
        tokio::task::block_in_place(|| while self.consumer.poll(Duration::ZERO).is_some() {});
        let given_up = self.ownership.take_given_up();
        !given_up && self.ownership.current().0.contains(&LEADER_SLOT)
    }

    /// Stands by until this instance holds the lease; false when `shutdown` came first.
    async fn wait(&self, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        let mut said = false;
        loop {
            if self.held() {
                info!("holding the lease: serving");
                return true;
            }
            if !said && self.ownership.assigned() {
                info!("another instance holds the lease: standing by");
                said = true;
            }
            tokio::select! {
                biased;
                _ = &mut *shutdown => return false,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// The lease's slot, to commit in a transaction under the holder's group metadata (`None`
    /// once given up).
    fn holder(
        &self,
        slots_topic: &str,
    ) -> Result<Option<(TopicPartitionList, crate::coordination::ownership::Member)>, Error> {
        let Some(member) = self.ownership.member() else {
            return Ok(None);
        };
        if !self.ownership.current().0.contains(&LEADER_SLOT) {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(slots_topic, LEADER_SLOT, Offset::Offset(0))
            .map_err(|e| Error::kafka("building the commit", e))?;
        Ok(Some((tpl, member)))
    }
}

/// The state of the targets service and what it reads it from.
struct Targets<'a> {
    settings: &'a Settings,
    health: &'a Health,
    rules: TargetRules,
    cal: Calendar,
    elapsed: Elapsed,
    board: TargetsBoard,
    /// What `/metrics` shows of the board's series.
    exposed: Exposed,
    ticker: Ticker,
    notifier: Notifier,
    out: Outputs<'a>,
    /// Target and plan records below these were dead-lettered by an earlier run.
    reported: HashMap<At, i64>,
    /// The group's metadata, under which the offsets past reported records commit.
    group: Arc<ConsumerGroupMetadata>,
    /// The lease held when this run started: each transaction commits under it.
    lease: &'a Lease,
    /// A transaction of this run committed.
    committed: bool,
    /// Per target and plan partition: the offset after the last record read.
    next_setting: HashMap<At, i64>,
    /// Ends of the inputs at start: until all are reached the board is partial.
    ends: HashMap<At, i64>,
    read: Counters,
}

/// Records applied, per input topic.
struct Counters {
    metrics: IntCounter,
    targets: IntCounter,
    plans: IntCounter,
    celebrations: IntCounter,
}

impl<'a> Targets<'a> {
    /// Restores what was announced, and assigns one consumer over the four inputs, every
    /// partition from its beginning.
    async fn start(
        settings: &'a Settings,
        health: &'a Health,
        producer: &'a FutureProducer,
        lease: &'a Lease,
    ) -> Result<(Self, StreamConsumer, Watch), Error> {
        let t = &settings.topics;
        let cal = settings.calendar()?;
        let c = &settings.calendar;
        let elapsed = Elapsed::new(cal, c.business_days, c.holidays.clone());
        let mut board = TargetsBoard::default();
        board.set_ramp(settings.ramp()?);
        let exposed = settings.exposed()?;
        board.show_windows(exposed.windows.iter().copied());
        let applied = |topic: &str| health.events.with_label_values(&[topic, "applied"]);
        let mut offsets = GroupOffsets::new(settings, &settings.targets.group_id)?;
        let (consumer, reported, ends, from) = assign_inputs(settings, &mut offsets)?;
        let watch = Watch::new(settings, from)?;
        let group = consumer
            .group_metadata()
            .map(Arc::new)
            .ok_or_else(|| Error::Config("the targets consumer has no group".into()))?;
        let mut me = Targets {
            settings,
            health,
            rules: settings.target_rules()?,
            cal,
            elapsed,
            board,
            exposed,
            ticker: Ticker::new(settings.alerts.celebrations_shown, cal),
            notifier: Notifier::new(settings.alerts.clone()),
            out: Outputs::new(producer, health, &t.deadletter, SERVICE),
            reported,
            group,
            lease,
            committed: false,
            next_setting: HashMap::new(),
            ends,
            read: Counters {
                metrics: applied(&t.metrics),
                targets: applied(&t.targets),
                plans: applied(&t.plans),
                celebrations: applied(&t.celebrations),
            },
        };
        me.restore_announced().await?;
        Ok((me, consumer, watch))
    }

    /// What was already announced: events are new only against what their topics hold.
    async fn restore_announced(&mut self) -> Result<(), Error> {
        let (t, notifier) = (&self.settings.topics, &mut self.notifier);
        read_to_end(self.settings, &t.alerts, |key, value| {
            let v = value.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok());
            notifier.restore_alert(key, v.as_ref());
        })
        .await?;
        read_to_end(self.settings, &t.celebrations, |key, _| {
            notifier.restore_celebration(key)
        })
        .await?;
        info!(
            firing = notifier.firing(),
            "restored alert states and sent celebrations"
        );
        Ok(())
    }

    fn caught_up(&self) -> bool {
        self.ends.is_empty()
    }

    /// Partition `p` of some input was read to its end; which topic it is, the consumer's
    /// positions tell.
    fn reached_end_of(&mut self, p: i32, consumer: &StreamConsumer) {
        let Ok(positions) = consumer.position() else {
            return;
        };
        for e in positions.elements().iter().filter(|e| e.partition() == p) {
            let at = (e.topic().to_owned(), p);
            if let (Some(end), Offset::Offset(o)) = (self.ends.get(&at), e.offset()) {
                if o >= *end {
                    self.ends.remove(&at);
                }
            }
        }
    }

    async fn on_tick(&mut self, exposed: &salespulse_expose::Snapshot) -> Result<Ended, Error> {
        let now = now_ms().div_euclid(1000);
        let mut outs = self.board.series(now, &self.cal, &self.elapsed);
        // Until every input is read to its end the board is partial; alerts and celebrations
        // decided on it would be wrong.
        if self.caught_up() {
            self.announce(&outs, now).await?;
        }
        outs.extend(self.ticker.series(now));
        let text = exposition(outs, &self.exposed);
        if let Ok(mut s) = exposed.write() {
            *s = Arc::new(text);
        }
        // Committed before the next tick decides: an event is decided only against what
        // earlier ones delivered.
        let ended = self.commit().await?;
        let state = &self.health.state;
        state
            .with_label_values(&["targets"])
            .set(self.board.targets() as i64);
        state
            .with_label_values(&["plans"])
            .set(self.board.plans() as i64);
        Ok(ended)
    }

    /// Produces the alerts and celebrations the board's series decide.
    async fn announce(&mut self, outs: &[Out], now: i64) -> Result<(), Error> {
        let t = &self.settings.topics;
        for ev in self.notifier.evaluate(outs, now) {
            let (topic, kind) = match ev.topic {
                EventTopic::Alerts => (&t.alerts, ev.value["state"].as_str()),
                EventTopic::Celebrations => (&t.celebrations, ev.value["celebration"].as_str()),
            };
            let kind = kind.unwrap_or_default();
            Announced {
                topic,
                key: &ev.key,
                kind,
            }
            .emit(self.health);
            let payload = serde_json::to_vec(&ev.value).unwrap_or_default();
            let headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some("application/json"),
            });
            let rec = FutureRecord::to(topic)
                .key(&ev.key)
                .payload(&payload)
                .headers(headers);
            self.out.enqueue(rec).await?;
        }
        Ok(())
    }

    /// Commits the open transaction: the tick's announcements and dead letters, with the
    /// offsets past the target and plan records they report, so that a restart does not
    /// report those again. Its records are acknowledged first (see `transaction::commit`).
    async fn commit(&mut self) -> Result<Ended, Error> {
        let tpl = self.unreported();
        let (mut produced, queued) = self.out.take_pending();
        if queued == 0 && tpl.count() == 0 {
            return Ok(Ended::Committed);
        }
        settle(&mut produced).await?;
        let (producer, group) = (self.out.producer, &self.group);
        let Some((slot, holder)) = self.lease.holder(&self.settings.topics.slots)? else {
            // Given up since the tick began: the loop aborts at its next tick.
            return Ok(Ended::Committed);
        };
        let ended = tokio::task::block_in_place(|| {
            crate::sink::transaction::commit(
                producer,
                &[(tpl.clone(), group.clone()), (slot, holder.0.clone())],
            )
        })?;
        if ended == Ended::Committed {
            TransactionEnded {
                outcome: "committed",
                why: None,
            }
            .emit(self.health);
            self.committed = true;
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    self.reported
                        .insert((e.topic().to_owned(), e.partition()), o);
                }
            }
        }
        Ok(ended)
    }

    /// The transaction was aborted: the decisions it held are not on the topics.
    fn start_over(&self, why: &str) -> Served {
        TransactionEnded {
            outcome: "aborted",
            why: Some(why),
        }
        .emit(self.health);
        Served::StartOver {
            committed: self.committed,
        }
    }

    /// A record that could not be produced dooms the open transaction: it is aborted and the
    /// loop starts over. Other errors stop the service.
    fn produce_failed(&self, e: Error) -> Result<Served, Error> {
        crate::sink::transaction::abort_after(self.out.producer, e)?;
        Ok(self.start_over("a record could not be produced"))
    }

    /// Offsets past the target and plan records read since the last commit.
    fn unreported(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();

        for ((topic, p), o) in &self.next_setting {
            if self
                .reported
                .get(&(topic.clone(), *p))
                .is_none_or(|r| o > r)
            {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
            }
        }
        tpl
    }

    async fn on_record(&mut self, m: &BorrowedMessage<'_>) -> Result<(), Error> {
        let at = (m.topic().to_owned(), m.partition());
        if self.ends.get(&at).is_some_and(|end| m.offset() + 1 >= *end) {
            self.ends.remove(&at);
        }
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return Ok(());
        };
        let t = &self.settings.topics;
        if at.0 == t.celebrations {
            // Read back, this service's own included: the ticker shows what subscribers
            // received.
            self.ticker
                .apply(key, m.payload(), now_ms().div_euclid(1000));
            self.read.celebrations.inc();
        } else if at.0 == t.metrics {
            self.apply_metric(key, m);
        } else {
            self.next_setting.insert(at.clone(), m.offset() + 1);
            let is_plan = at.0 == t.plans;
            match apply_setting(&mut self.board, is_plan, key, m.payload(), &self.rules) {
                Ok(()) if is_plan => self.read.plans.inc(),
                Ok(()) => self.read.targets.inc(),
                // Reported by an earlier run.
                Err(_) if self.reported.get(&at).is_some_and(|r| m.offset() < *r) => {}
                Err((reason, detail)) => self.out.reject(m, reason, &detail).await?,
            }
        }
        Ok(())
    }

    /// A key keeps its metric, so a tombstone clears whichever map holds it.
    fn apply_metric(&mut self, key: &str, m: &BorrowedMessage<'_>) {
        let board = &mut self.board;
        match input(m, self.settings.publish.format) {
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
        self.read.metrics.inc();
    }
}

/// One consumer over the four inputs, every partition from its beginning; with where
/// dead-lettering stopped last time (target and plan records below it were reported
/// already), the end of each partition now, and where each starts.
#[allow(clippy::type_complexity)]
fn assign_inputs(
    settings: &Settings,
    offsets: &mut GroupOffsets<'_>,
) -> Result<
    (
        StreamConsumer,
        HashMap<At, i64>,
        HashMap<At, i64>,
        HashMap<At, i64>,
    ),
    Error,
> {
    let t = &settings.topics;
    let consumer: StreamConsumer = client_config(settings)
        .set("group.id", &settings.targets.group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // A start offset gone by the time of the first fetch (retention moved the start)
        // reads from the new start, not from the end.
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| Error::kafka("creating the consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for topic in [&t.targets, &t.plans] {
        for p in partitions(&consumer, topic)? {
            tpl.add_partition(topic, p);
        }
    }
    let reported = offsets
        .committed(&tpl)?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect();
    let mut assign = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let mut from = HashMap::new();
    for topic in [&t.metrics, &t.targets, &t.plans, &t.celebrations] {
        for p in partitions(&consumer, topic)? {
            let (low, high) = crate::kafka::watermarks(&consumer, topic, p)?;
            // Explicit offsets rather than `Offset::Beginning`: no offset lookup stands
            // between the assignment and the first fetch.
            assign
                .add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| Error::kafka("assigning partitions", e))?;
            from.insert((topic.clone(), p), low);
            if high > low {
                ends.insert((topic.clone(), p), high);
            }
        }
    }
    consumer
        .assign(&assign)
        .map_err(|e| Error::kafka("assigning partitions", e))?;
    Ok((consumer, reported, ends, from))
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

    #[test]
    fn the_tick_writes_what_the_crate_encoder_writes() {
        use prometheus::Encoder;
        let out = |family: &str, labels: &[(&'static str, &str)], value: f64| Out {
            family: family.into(),
            labels: labels.iter().map(|(n, v)| (*n, (*v).into())).collect(),
            value,
        };
        // Families interleaved as the board pushes them, label values that need escaping,
        // and values of every shape.
        let outs = vec![
            out(
                "sales_rep_target",
                &[("rep", "a\"b"), ("team", "x\\y")],
                1000.0,
            ),
            out("sales_rep_rank", &[("rep", "a"), ("among", "org")], 1.0),
            out(
                "sales_rep_target",
                &[("rep", "c\nd"), ("team", "}")],
                0.1 + 0.2,
            ),
            out("sales_period_elapsed_ratio", &[], -0.0),
            out(
                "sales_rep_rank",
                &[("rep", "b"), ("among", "org")],
                f64::NAN,
            ),
            out("sales_rep_pace_ratio", &[("rep", "e")], f64::INFINITY),
            out("sales_rep_gap", &[("rep", "é ü")], -12345.678),
            out("sales_org_attainment_median", &[], 1e21),
        ];
        let mut theirs = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families(outs.clone()), &mut theirs)
            .expect("encoded");
        let ours = exposition(outs, &Exposed::default());
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    /// `[expose] windows` and `metrics` leave out the series of other windows and metrics;
    /// series that name neither stay.
    #[test]
    fn the_exposition_leaves_out_what_expose_narrows() {
        use salespulse_aggregate::{Metric, Window};
        let out = |family: &str, labels: &[(&'static str, &str)]| Out {
            family: family.into(),
            labels: labels.iter().map(|(n, v)| (*n, (*v).into())).collect(),
            value: 1.0,
        };
        let outs = vec![
            out(
                "sales_rep_rank",
                &[("metric", "bookings"), ("window", "qtd")],
            ),
            out(
                "sales_rep_rank",
                &[("metric", "bookings"), ("window", "today")],
            ),
            out(
                "sales_rep_rank",
                &[("metric", "deals_won"), ("window", "today")],
            ),
            out("sales_rep_activities_per_win", &[("window", "mtd")]),
            out("sales_rep_activities_per_win", &[("window", "today")]),
            out("sales_rep_target", &[("metric", "deals_won")]),
            out("sales_rep_target", &[("metric", "bookings")]),
            out("sales_period_elapsed_ratio", &[("period_type", "week")]),
        ];
        let lines = |exposed: &Exposed| -> Vec<String> {
            String::from_utf8(exposition(outs.clone(), exposed))
                .expect("text")
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(lines(&Exposed::default()).len(), outs.len());
        let exposed = Exposed {
            windows: [Window::Today].into_iter().collect(),
            metrics: [Metric::Bookings].into_iter().collect(),
            max_series_per_family: 0,
        };
        assert_eq!(
            lines(&exposed),
            [
                "sales_period_elapsed_ratio{period_type=\"week\"} 1",
                "sales_rep_activities_per_win{window=\"today\"} 1",
                "sales_rep_rank{metric=\"bookings\",window=\"today\"} 1",
                "sales_rep_target{metric=\"bookings\"} 1",
            ]
        );
    }
}
