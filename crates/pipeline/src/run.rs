//! The service loop: restore, then consume → decode → aggregate → expose and publish.
//!
//! Delivery: the consumed offsets are committed only after every dead-letter and metric
//! record produced for them is acknowledged by the broker, so nothing is lost (at least once
//! for side outputs). State is rebuilt at start-up from the newest snapshot (see
//! [`crate::snapshot`]) and by replaying the input after it up to the committed offsets
//! without side effects, so the numbers after a restart are exactly those of an uninterrupted
//! run; the last published board is read back from `sales.metrics` so that series that
//! vanished meanwhile get their tombstones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use prometheus::{Gauge, IntCounter};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_aggregate::{
    metric_of_key, subject_of_key, Change, Differ, Metric, Outcome, Subject, SubjectSeries,
};
use salespulse_decode::{Contract, DecodeError, Format};
use salespulse_expose::{AppState, Board, Health};
use salespulse_publish::PublishFormat;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::kafka::{
    client_config, committed_offsets, ensure_topics, partitions, watermarks, ReadToEnd, TopicSpec,
};
use crate::ownership::{slot_of, Handover, Ownership, SlotsContext, LEADER_SLOT};
use crate::processor::Processor;
use crate::Error;

/// Most records handled between two looks at the clock and the shutdown signal.
const MAX_BATCH: usize = 2048;

/// How many celebrations, and for how long, an instance that does not lead keeps in case the
/// leader fails before announcing them.
const MAX_PENDING_WINS: usize = 10_000;
const PENDING_WINS_FOR: Duration = Duration::from_secs(3_600);

/// How often consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// How long an instance waits for its slots after a revocation (or its start) before it joins
/// the group again as a new member: well past a rebalance among live members (seconds) and a
/// dead member's session timeout (10 s).
const SLOTS_REJOIN_AFTER: Duration = Duration::from_secs(60);

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Runs a service until `shutdown` resolves, then flushes and commits before returning.
pub async fn run<P: Processor>(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let svc = settings.service(P::SERVICE).clone();
    let contract = settings.contract()?;
    let cal = settings.calendar()?;
    let input = P::input_topic(&settings.topics).to_owned();
    let t = &settings.topics;

    let health = Health::new(P::SERVICE);
    let board = Arc::new(Board::new(settings.exposed()?));
    let ready = Arc::new(AtomicBool::new(false));
    let app = AppState {
        board: board.clone(),
        health: health.clone(),
        ready: ready.clone(),
        snapshot: Arc::default(),
    };
    let http = serve_http(svc.listen, app, P::SERVICE).await?;

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
                    name: input.clone(),
                    partitions: t.partitions,
                    compacted: false,
                },
                TopicSpec {
                    name: t.roster.clone(),
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
                TopicSpec {
                    name: t.snapshots.clone(),
                    partitions: 1,
                    compacted: true,
                },
                TopicSpec {
                    name: t.slots.clone(),
                    partitions: t.slot_count,
                    compacted: false,
                },
            ],
        )
        .await?;
    }

    let started = Instant::now();
    // What this instance exported: on /metrics, and on the metrics topic (read back from the
    // topic whenever its slots change).
    let mut shown = Differ::default();
    let mut differ = Differ::default();
    let new_core = || {
        let mut core = P::new(&contract, cal, now_ms());
        core.configure_regions(&settings.regions.team_list());
        if P::CELEBRATES {
            core.enable_celebrations(&settings.alerts);
        }
        core
    };
    let mut core = new_core();
    let snapshots = svc.snapshot_interval_seconds > 0;
    // A snapshot's positions are those of one group in one service's input.
    let snapshot_owner = format!("{}/{}", svc.group_id, P::SERVICE);
    let mut last_snapshot = None;
    if snapshots {
        if let Some(saved) = crate::snapshot::load(&settings, &snapshot_owner).await? {
            match core.restore(&saved.state) {
                Ok(()) => {
                    info!(bytes = saved.state.len(), generation = saved.manifest.generation, positions = ?saved.manifest.positions, "state loaded from snapshot");
                    health.snapshot_bytes.set(saved.state.len() as i64);
                    health
                        .snapshot_timestamp
                        .set(saved.manifest.taken_at_ms as f64 / 1000.0);
                    last_snapshot = Some(saved.manifest);
                }
                Err(e) => {
                    warn!(error = %e, "snapshot not usable; replaying all input instead");
                    core = new_core();
                }
            }
        }
    }
    // Celebrations already on their topic are never announced again (read when this instance
    // takes the leader slot); those decided while another instance leads wait in `pending_wins`
    // until they are seen there.
    let mut celebrated: std::collections::HashSet<String> = Default::default();
    let mut pending_wins: std::collections::VecDeque<(Instant, String, serde_json::Value)> =
        Default::default();
    if P::CELEBRATES && t.create {
        ensure_topics(
            &settings,
            &[TopicSpec {
                name: t.celebrations.clone(),
                partitions: 1,
                compacted: true,
            }],
        )
        .await?;
    }

    // Idempotence keeps each partition in the order produced when a batch is retried (a
    // broker restart): the last record of a metric's key on the compacted topic is its value.
    let mut producer_config = client_config(&settings);
    for (k, v) in [
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
        ("compression.type", "lz4"),
    ] {
        if producer_config.get(k).is_none() {
            producer_config.set(k, v);
        }
    }
    let producer: FutureProducer = producer_config
        .create()
        .map_err(|e| Error::kafka("creating the producer", e))?;

    let ownership = Ownership::default();
    let handover = Handover::default();
    // Joins the slots group with a fresh member; called again when an assignment never comes.
    let join_slots = || -> Result<BaseConsumer<SlotsContext>, Error> {
        let mut c = client_config(&settings);
        c.set("group.id", format!("{}-{}-slots", svc.group_id, P::SERVICE))
            // Eager: every member gives up its slots before any is handed out again.
            .set("partition.assignment.strategy", "roundrobin")
            .set("enable.auto.commit", "false");
        if c.get("session.timeout.ms").is_none() {
            // A killed instance's slots move on after this long.
            c.set("session.timeout.ms", "10000");
        }
        let consumer: BaseConsumer<SlotsContext> = c
            .create_with_context(SlotsContext {
                ownership: ownership.clone(),
                board: board.clone(),
                producer: producer.clone(),
                committer: client_config(&settings)
                    .set("group.id", &svc.group_id)
                    .set("enable.auto.commit", "false")
                    .create()
                    .map_err(|e| Error::kafka("creating the offset committer", e))?,
                input: input.clone(),
                handover: handover.clone(),
            })
            .map_err(|e| Error::kafka("creating the slots consumer", e))?;
        consumer
            .subscribe(&[&t.slots])
            .map_err(|e| Error::kafka("joining the slots group", e))?;
        ownership.awaiting();
        Ok(consumer)
    };
    let mut slots_consumer = join_slots()?;
    let slot_count = i32::try_from(partitions(&slots_consumer, &t.slots)?.len()).unwrap_or(1);
    let owns = |slots: &BTreeSet<i32>, s: &Subject| slots.contains(&slot_of(s, slot_count));
    let mut seen_generation = 0;
    let mut leader = false;

    // The roster is small and read whole by every instance, from the beginning, never
    // committed: a global table.
    let roster: StreamConsumer = client_config(&settings)
        .set("group.id", format!("{}-roster", svc.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Should its position ever be out of range, the table is read again from its start
        // (upserts are idempotent) rather than from its end.
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| Error::kafka("creating the roster consumer", e))?;
    let roster_parts = assign_from_beginning(&roster, &t.roster)?;
    let roster_end = high_watermarks(&roster, &t.roster, &roster_parts)?;
    let mut ctx = Ctx {
        contract: &contract,
        health: &health,
        input_counters: TopicCounters::new(&health, &input),
        roster_counters: TopicCounters::new(&health, &t.roster),
        producer: &producer,
        deadletter: &t.deadletter,
        pending: Vec::new(),
        service: P::SERVICE,
    };
    let mut reader = ReadToEnd::new(&roster, &t.roster, roster_end, HashMap::new());
    let mut records = 0u64;
    while let Some(m) = reader.next().await? {
        ctx.roster(&mut core, &m);
        records += 1;
    }
    info!(records, "roster loaded");

    let consumer: StreamConsumer = client_config(&settings)
        .set("group.id", &svc.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| Error::kafka("creating the input consumer", e))?;
    let parts = {
        let probe: BaseConsumer = client_config(&settings)
            .create()
            .map_err(|e| Error::kafka("creating a metadata client", e))?;
        partitions(&probe, &input)?
    };
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(&input, *p);
    }
    let committed = tokio::task::block_in_place(|| committed_offsets(&consumer, &tpl))?;
    // Replay every partition from the snapshot's position (else from its start): records
    // below the committed offset rebuild the state silently; the rest are processed live.
    let mut restore_until: HashMap<i32, i64> = HashMap::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut assign = TopicPartitionList::new();
    for p in &parts {
        let (low, _) = watermarks(&consumer, &input, *p)?;
        let c = match committed.find_partition(&input, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        };
        let saved = last_snapshot
            .as_ref()
            .and_then(|m| m.positions.get(p).copied());
        if saved.is_some_and(|s| s < low) {
            warn!(partition = p, snapshot = ?saved, low, "input older than the snapshot was deleted by retention");
        }
        let from = saved.unwrap_or(low).max(low);
        next.insert(*p, from);
        if c > from {
            restore_until.insert(*p, c);
        }
        assign
            .add_partition_offset(&input, *p, Offset::Offset(from))
            .map_err(|e| Error::kafka("assigning partitions", e))?;
    }
    consumer
        .assign(&assign)
        .map_err(|e| Error::kafka("assigning partitions", e))?;
    // Records below these offsets had their dead letters and celebrations produced already.
    let mut quiet_until = restore_until.clone();
    let restore_total: i64 = restore_until
        .iter()
        .map(|(p, until)| until - next.get(p).copied().unwrap_or(0))
        .sum();
    let mut restoring = !restore_until.is_empty();
    health.restore_replayed.set(restore_total);
    if !restoring {
        health.restore_seconds.set(started.elapsed().as_secs_f64());
    }
    info!(topic = %input, partitions = parts.len(), restore_records = restore_total, "consuming");
    let snapshot_every = Duration::from_secs(svc.snapshot_interval_seconds);
    let mut snapshot_at = Instant::now();

    let interval = Duration::from_millis(settings.publish.interval_ms);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let publish_format = settings.publish.format;
    let mut lag_checked = Instant::now();
    let mut acked_before: Vec<DeliveryFuture> = Vec::new();
    let mut committable: HashMap<i32, i64> = HashMap::new();
    let mut max_lag: Option<i64> = None;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                info!("shutting down: flushing outputs and committing offsets");
                break;
            }
            _ = tick.tick() => {
                if restoring {
                    restoring = restore_until.iter().any(|(p, until)| next.get(p).copied().unwrap_or(0) < *until);
                    if !restoring {
                        let seconds = started.elapsed().as_secs_f64();
                        health.restore_seconds.set(seconds);
                        info!(records = restore_total, seconds, "state restored");
                    }
                }
                core.tick(now_ms());
                // Only live records leave celebrations (see Ctx::input). The leader announces
                // them before it may give up its slots below.
                for (key, value) in core.take_celebrations() {
                    pending_wins.push_back((Instant::now(), key, value));
                }
                if leader {
                    for (_, key, value) in std::mem::take(&mut pending_wins) {
                        if celebrated.insert(key.clone()) {
                            info!(topic = %t.celebrations, key = %key, "announcing");
                            let payload = serde_json::to_vec(&value).unwrap_or_default();
                            ctx.enqueue(FutureRecord::to(&t.celebrations).key(key.as_bytes()).payload(payload.as_slice())).await?;
                        }
                    }
                }
                // Group membership: the rebalance callbacks run inside this poll. A leader that
                // gives up its slots there commits what it has processed, outputs flushed.
                handover.set(leader.then(|| next.iter().filter(|(p, o)| quiet_until.get(p).is_none_or(|q| *o >= q)).map(|(p, o)| (*p, *o)).collect()));
                tokio::task::block_in_place(|| while slots_consumer.poll(Duration::ZERO).is_some() {});
                handover.set(None);
                if let Some(waited) = ownership.awaited().filter(|w| *w >= SLOTS_REJOIN_AFTER) {
                    // Revoked (or new) and never assigned since: seen after a broker restart, when
                    // the group forgets the member. A fresh member gets an assignment.
                    warn!(waited_s = waited.as_secs(), "no slot assignment since the last revocation; joining the slots group again");
                    drop(slots_consumer);
                    slots_consumer = join_slots()?;
                }
                let (slots, generation) = ownership.current();
                if !restoring && generation != seen_generation {
                    let was_leader = leader;
                    // Not leading (no commits, snapshots or announcements) until the take-over
                    // is complete; a take-over that fails (the broker away) is retried at the
                    // next tick, from the start.
                    leader = false;
                    shown = Differ::default();
                    board.clear();
                    let taken = async {
                        if slots.is_empty() {
                            differ = Differ::default();
                            return Ok::<bool, Error>(false);
                        }
                        let leads = slots.contains(&LEADER_SLOT);
                        // Start over from what the topic holds for the subjects now owned.
                        differ = read_board(&settings, P::METRICS).await?;
                        let mut full: Vec<SubjectSeries> = core.snapshot().into_iter().filter(|s| owns(&slots, &s.subject)).collect();
                        let present: BTreeSet<Subject> = full.iter().map(|s| s.subject.clone()).collect();
                        let gone: Vec<Subject> = differ.subjects().filter(|s| owns(&slots, s) && !present.contains(*s)).cloned().collect();
                        full.extend(gone.into_iter().map(|subject| SubjectSeries { subject, series: Vec::new() }));
                        board.apply(&shown.diff(full.clone()));
                        let changes = differ.diff(full);
                        publish(&mut ctx, &t.metrics, &changes, publish_format).await?;
                        info!(slots = ?slots, leader = leads, series = board.len(), published = changes.len(), "took over the series of the assigned slots");
                        if leads && !was_leader {
                            celebrated.clear();
                            if P::CELEBRATES {
                                read_to_end(&settings, &t.celebrations, |key, _| {
                                    celebrated.insert(key.to_owned());
                                })
                                .await?;
                            }
                            let caught = catch_up_dead_letters::<P>(&settings, &consumer, &input, &mut next, &mut quiet_until, &mut ctx).await?;
                            info!(dead_letters = caught, "leading: org series, dead letters, celebrations, offsets and snapshots");
                        }
                        Ok(leads)
                    }
                    .await;
                    match taken {
                        Ok(leads) => {
                            leader = leads;
                            seen_generation = generation;
                            if slots.is_empty() {
                                info!("holding no slot");
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "taking over the assigned slots failed; retrying at the next tick");
                            shown = Differ::default();
                            board.clear();
                        }
                    }
                    health.owned_slots.set(if seen_generation == generation { slots.len() as i64 } else { 0 });
                    health.leader.set(i64::from(leader));
                }
                if !leader {
                    // The leader announces them; kept a while in case it fails before it does.
                    while pending_wins.len() > MAX_PENDING_WINS || pending_wins.front().is_some_and(|w| w.0.elapsed() > PENDING_WINS_FOR) {
                        pending_wins.pop_front();
                    }
                }
                // Changes go out only once the owned slots are taken over (which starts from the
                // whole state, so nothing drained meanwhile is missed).
                if !restoring && seen_generation == generation {
                    let subjects: Vec<SubjectSeries> = core.drain_changes().into_iter().filter(|s| owns(&slots, &s.subject)).collect();
                    board.apply(&shown.diff(subjects.clone()));
                    let changes = differ.diff(subjects);
                    publish(&mut ctx, &t.metrics, &changes, publish_format).await?;
                }
                // Offsets move one tick behind: those read up to the previous tick are
                // committed once everything produced for them is acknowledged, which by now it
                // almost always is, so the loop rarely waits for the broker.
                settle(&mut acked_before).await?;
                if leader {
                    commit(&consumer, &input, &committable, &quiet_until)?;
                }
                if leader && snapshots && !restoring && snapshot_at.elapsed() >= snapshot_every {
                    // Everything produced for the records read so far must be durable before a
                    // snapshot says they are done.
                    ctx.settle().await?;
                    last_snapshot = Some(take_snapshot(&producer, &settings, &snapshot_owner, &core, &next, last_snapshot.as_ref(), &health).await?);
                    snapshot_at = Instant::now();
                }
                acked_before = std::mem::take(&mut ctx.pending);
                committable.clone_from(&next);
                if lag_checked.elapsed() >= LAG_EVERY || max_lag.is_none() {
                    // A metadata round trip per partition: done every few seconds, not per tick.
                    lag_checked = Instant::now();
                    let mut worst = 0;
                    for p in &parts {
                        let high = tokio::task::block_in_place(|| {
                            consumer.fetch_watermarks(&input, *p, Duration::from_secs(2))
                        });
                        if let Ok((_, high)) = high {
                            let lag = (high - next.get(p).copied().unwrap_or(0)).max(0);
                            worst = worst.max(lag);
                            health.lag.with_label_values(&[input.as_str(), &p.to_string()]).set(lag);
                        }
                    }
                    max_lag = Some(worst);
                }
                let max_lag = max_lag.unwrap_or(i64::MAX);
                ctx.input_counters.flush();
                ctx.roster_counters.flush();
                for (kind, n) in core.state_sizes() {
                    health.state.with_label_values(&[kind]).set(n as i64);
                }
                let is_ready = !restoring && max_lag <= svc.ready_max_lag && ownership.assigned();
                ready.store(is_ready, Ordering::Relaxed);
                health.ready.set(i64::from(is_ready));
            }
            m = roster.recv() => match m {
                Ok(m) => ctx.roster(&mut core, &m),
                Err(e) => warn!(error = %e, "roster consumer error"),
            },
            m = consumer.recv() => {
                // Take what is already fetched without going back through the select: the
                // per-record cost of the loop stays close to that of the consumer itself.
                let mut m = Some(m);
                let mut batch = 0;
                while let Some(r) = m.take() {
                    match r {
                        Ok(m) => {
                            let p = m.partition();
                            let live = quiet_until.get(&p).is_none_or(|until| m.offset() >= *until);
                            ctx.input(&mut core, &m, live, leader).await?;
                            next.insert(p, m.offset() + 1);
                        }
                        Err(e) => warn!(error = %e, "input consumer error"),
                    }
                    batch += 1;
                    if batch < MAX_BATCH {
                        m = consumer.recv().now_or_never();
                    }
                }
            },
        }
    }
    ready.store(false, Ordering::Relaxed);
    core.tick(now_ms());
    let (slots, generation) = ownership.current();
    if !restoring && seen_generation == generation {
        let subjects: Vec<SubjectSeries> = core
            .drain_changes()
            .into_iter()
            .filter(|s| owns(&slots, &s.subject))
            .collect();
        let changes = differ.diff(subjects);
        publish(&mut ctx, &t.metrics, &changes, publish_format).await?;
    }
    settle(&mut acked_before).await?;
    ctx.settle().await?;
    if leader {
        commit(&consumer, &input, &next, &quiet_until)?;
    }
    if leader && snapshots && !restoring {
        take_snapshot(
            &producer,
            &settings,
            &snapshot_owner,
            &core,
            &next,
            last_snapshot.as_ref(),
            &health,
        )
        .await?;
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .or_else(|e| match e {
            rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            ) => Ok(()),
            e => Err(e),
        })
        .map_err(|e| Error::kafka("committing offsets at shutdown", e))?;
    // Leaving the group hands the slots over at once (the callbacks clear the board first).
    drop(slots_consumer);
    http.abort();
    info!("stopped cleanly");
    Ok(())
}

/// Produces changed series to the metrics topic.
async fn publish(
    ctx: &mut Ctx<'_>,
    topic: &str,
    changes: &[Change],
    format: PublishFormat,
) -> Result<(), Error> {
    let as_of = Utc::now();
    for c in changes {
        let value = salespulse_publish::encode(c, format, as_of);
        let rec =
            FutureRecord::to(topic)
                .key(c.key.as_bytes())
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some(format.content_type()),
                }));
        let rec = match &value {
            Some(v) => rec.payload(v.as_slice()),
            None => rec,
        };
        ctx.enqueue(rec).await?;
    }
    ctx.health.published.inc_by(changes.len() as u64);
    Ok(())
}

/// On taking the leader slot: dead-letters the rejects among the records between the group's
/// committed offsets (up to which the previous leader's dead letters are durable) and this
/// instance's position, which it processed without that duty. Where this instance is behind
/// the committed offsets instead, it stays quiet until it reaches them. Returns the number of
/// dead letters produced.
async fn catch_up_dead_letters<P: Processor>(
    settings: &Settings,
    consumer: &StreamConsumer,
    input: &str,
    next: &mut HashMap<i32, i64>,
    quiet_until: &mut HashMap<i32, i64>,
    ctx: &mut Ctx<'_>,
) -> Result<u64, Error> {
    let mut tpl = TopicPartitionList::new();
    for p in next.keys() {
        tpl.add_partition(input, *p);
    }
    let committed = tokio::task::block_in_place(|| committed_offsets(consumer, &tpl))?;
    let mut ranges = Vec::new();
    for (p, at) in next.iter() {
        let Some(Offset::Offset(c)) = committed.find_partition(input, *p).map(|e| e.offset())
        else {
            continue;
        };
        if *at < c {
            quiet_until.insert(*p, c);
        } else if *at > c {
            ranges.push((*p, c, *at));
        }
    }
    if ranges.is_empty() {
        return Ok(0);
    }
    let reader: StreamConsumer = client_config(settings)
        .set("group.id", "salespulse-dead-letter-catch-up")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| Error::kafka("creating the catch-up reader", e))?;
    let mut assign = TopicPartitionList::new();
    for (p, from, _) in &ranges {
        assign
            .add_partition_offset(input, *p, Offset::Offset(*from))
            .map_err(|e| Error::kafka("assigning partitions", e))?;
    }
    reader
        .assign(&assign)
        .map_err(|e| Error::kafka("assigning partitions", e))?;
    let until: HashMap<i32, i64> = ranges.iter().map(|(p, _, to)| (*p, *to)).collect();
    let from: HashMap<i32, i64> = ranges.iter().map(|(p, from, _)| (*p, *from)).collect();
    let mut records = ReadToEnd::new(&reader, input, until.clone(), from);
    let mut produced = 0;
    while let Some(m) = records.next().await? {
        if until.get(&m.partition()).is_none_or(|to| m.offset() >= *to) {
            continue;
        }
        // Judged at the time the record arrived, as it was when first processed.
        let at = m.timestamp().to_millis().unwrap_or_else(now_ms);
        let payload = m.payload().unwrap_or_default();
        let res = Format::from_content_type(content_type(&m))
            .and_then(|f| P::check(ctx.contract, m.key(), payload, f, at));
        if let Err(e) = res {
            ctx.reject(&m, &e).await?;
            produced += 1;
        }
    }
    Ok(produced)
}

/// Saves the core's state as of the input positions `next`; every output produced for the
/// records before them must already be acknowledged.
async fn take_snapshot<P: Processor>(
    producer: &FutureProducer,
    settings: &Settings,
    owner: &str,
    core: &P,
    next: &HashMap<i32, i64>,
    previous: Option<&crate::snapshot::Manifest>,
    health: &Health,
) -> Result<crate::snapshot::Manifest, Error> {
    let took = Instant::now();
    let state = core.save();
    let positions: BTreeMap<i32, i64> = next.iter().map(|(p, o)| (*p, *o)).collect();
    let m = crate::snapshot::save(producer, settings, owner, &state, positions, previous).await?;
    health.snapshot_bytes.set(state.len() as i64);
    health.snapshot_timestamp.set(m.taken_at_ms as f64 / 1000.0);
    info!(
        bytes = state.len(),
        generation = m.generation,
        seconds = took.elapsed().as_secs_f64(),
        "snapshot written"
    );
    Ok(m)
}

/// Binds the HTTP endpoints and serves them in the background.
pub(crate) async fn serve_http(
    listen: std::net::SocketAddr,
    app: AppState,
    service: &str,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Io(format!("binding {listen}"), e))?;
    info!(service, listen = %listen, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, salespulse_expose::router(app)).await {
            error!(error = %e, "HTTP server stopped");
        }
    }))
}

/// Commits the next offset of every partition that is past its restore point.
fn commit(
    consumer: &StreamConsumer,
    topic: &str,
    next: &HashMap<i32, i64>,
    restore_until: &HashMap<i32, i64>,
) -> Result<(), Error> {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in next {
        if restore_until.get(p).is_none_or(|u| o >= u) {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(|e| Error::kafka("building the commit", e))?;
        }
    }
    if tpl.count() > 0 {
        consumer
            .store_offsets(&tpl)
            .map_err(|e| Error::kafka("storing offsets", e))?;
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "offset commit failed; it is retried on the next tick");
        }
    }
    Ok(())
}

/// The health counters of one topic, resolved once: a labelled lookup per record would cost
/// more than decoding it.
struct TopicCounters {
    applied: IntCounter,
    duplicate: IntCounter,
    stale: IntCounter,
    rejected: IntCounter,
    last_event: Gauge,
    newest_ms: i64,
}

impl TopicCounters {
    fn new(health: &Health, topic: &str) -> TopicCounters {
        let c = |o: &str| health.events.with_label_values(&[topic, o]);
        TopicCounters {
            applied: c("applied"),
            duplicate: c("duplicate"),
            stale: c("stale"),
            rejected: c("rejected"),
            last_event: health.last_event.with_label_values(&[topic]),
            newest_ms: 0,
        }
    }

    fn outcome(&self, o: Outcome) -> &IntCounter {
        match o {
            Outcome::Applied => &self.applied,
            Outcome::Duplicate => &self.duplicate,
            Outcome::Stale => &self.stale,
        }
    }

    fn observe(&mut self, m: &BorrowedMessage<'_>) {
        if let Some(ts) = m.timestamp().to_millis() {
            self.newest_ms = self.newest_ms.max(ts);
        }
    }

    /// Publishes the newest timestamp; called once a tick.
    fn flush(&self) {
        if self.newest_ms > 0 {
            self.last_event.set(self.newest_ms as f64 / 1000.0);
        }
    }
}

/// What the per-record handlers share.
struct Ctx<'a> {
    contract: &'a Contract,
    health: &'a Health,
    input_counters: TopicCounters,
    roster_counters: TopicCounters,
    producer: &'a FutureProducer,
    deadletter: &'a str,
    pending: Vec<DeliveryFuture>,
    service: &'static str,
}

impl Ctx<'_> {
    fn roster<P: Processor>(&mut self, core: &mut P, m: &BorrowedMessage<'_>) {
        self.roster_counters.observe(m);
        let format = Format::from_content_type(content_type(m));
        let res = format.and_then(|f| self.contract.decode_roster(m.key(), m.payload(), f));
        match res {
            Ok(ev) => {
                core.roster(&ev);
                self.roster_counters.applied.inc();
            }
            Err(e) => {
                // The roster is re-read from its start by every instance at every start, so it
                // has no single reader to dead-letter from: its rejects are counted and logged.
                warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), reason = %e.reason, detail = %e.detail, "rejected roster record");
                self.roster_counters.rejected.inc();
                self.health
                    .rejected
                    .with_label_values(&[m.topic(), e.reason.code()])
                    .inc();
            }
        }
    }

    /// Applies one input record. `live`: its celebrations are still to be decided (it was not
    /// processed before a restart); `leading`: this instance also counts it and dead-letters it.
    async fn input<P: Processor>(
        &mut self,
        core: &mut P,
        m: &BorrowedMessage<'_>,
        live: bool,
        leading: bool,
    ) -> Result<(), Error> {
        let payload = m.payload().unwrap_or_default();
        // A replayed record announced its celebrations in the run that processed it live.
        core.set_live(live);
        let res = Format::from_content_type(content_type(m))
            .and_then(|f| core.handle(self.contract, m.key(), payload, f, now_ms()));
        if !live || !leading {
            return Ok(());
        }
        self.input_counters.observe(m);
        match res {
            Ok(outcome) => self.input_counters.outcome(outcome).inc(),
            Err(e) => self.reject(m, &e).await?,
        }
        Ok(())
    }

    async fn reject(&mut self, m: &BorrowedMessage<'_>, e: &DecodeError) -> Result<(), Error> {
        warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            reason = %e.reason,
            detail = %e.detail,
            "rejected record, sent to the dead-letter topic"
        );
        self.input_counters.rejected.inc();
        self.health
            .rejected
            .with_label_values(&[m.topic(), e.reason.code()])
            .inc();
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for i in 0..h.count() {
                let x = h.get(i);
                headers = headers.insert(Header {
                    key: x.key,
                    value: x.value,
                });
            }
        }
        let headers = headers
            .insert(Header {
                key: "reason",
                value: Some(e.reason.code()),
            })
            .insert(Header {
                key: "reason.detail",
                value: Some(&e.detail),
            })
            .insert(Header {
                key: "source.topic",
                value: Some(m.topic()),
            })
            .insert(Header {
                key: "source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "source.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "service",
                value: Some(self.service),
            });
        let mut rec = FutureRecord::to(self.deadletter).headers(headers);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(p) = m.payload() {
            rec = rec.payload(p);
        }
        self.enqueue(rec).await
    }

    /// Queues a record, waiting for earlier deliveries when the producer queue is full.
    async fn enqueue<K, V>(&mut self, mut rec: FutureRecord<'_, K, V>) -> Result<(), Error>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        V: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(rec) {
                Ok(f) => {
                    self.pending.push(f);
                    return Ok(());
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    rec = r;
                    self.settle().await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(Error::kafka("producing", e)),
            }
        }
    }

    async fn settle(&mut self) -> Result<(), Error> {
        settle(&mut self.pending).await
    }
}

/// Waits until every queued record is acknowledged. A record the broker refused after
/// librdkafka's own retries stops the service, so that offsets past it are never committed.
pub(crate) async fn settle(pending: &mut Vec<DeliveryFuture>) -> Result<(), Error> {
    for f in pending.drain(..) {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(Error::kafka("delivering a produced record", e)),
            Err(_) => return Err(Error::Config("producer dropped a delivery".into())),
        }
    }
    Ok(())
}

pub(crate) fn content_type<'a>(m: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case("content-type"))
        .and_then(|h| h.value)
}

pub(crate) fn assign_from_beginning(c: &StreamConsumer, topic: &str) -> Result<Vec<i32>, Error> {
    let parts = partitions(c, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| Error::kafka("assigning partitions", e))?;
    }
    c.assign(&tpl)
        .map_err(|e| Error::kafka("assigning partitions", e))?;
    Ok(parts)
}

pub(crate) fn high_watermarks(
    c: &StreamConsumer,
    topic: &str,
    parts: &[i32],
) -> Result<HashMap<i32, i64>, Error> {
    let mut out = HashMap::new();
    for p in parts {
        let (low, high) = watermarks(c, topic, *p)?;
        if high > low {
            out.insert(*p, high);
        }
    }
    Ok(out)
}

/// Reads a topic from its beginning to its current end, handing each record's key and value
/// (`None` for a tombstone) to `f`.
pub async fn read_to_end(
    settings: &Settings,
    topic: &str,
    mut f: impl FnMut(&str, Option<&[u8]>),
) -> Result<(), Error> {
    let c: StreamConsumer = client_config(settings)
        .set("group.id", "salespulse-topic-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| Error::kafka("creating a topic reader", e))?;
    let parts = assign_from_beginning(&c, topic)?;
    let end = high_watermarks(&c, topic, &parts)?;
    let mut reader = ReadToEnd::new(&c, topic, end, HashMap::new());
    while let Some(m) = reader.next().await? {
        if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
            f(key, m.payload());
        }
    }
    Ok(())
}

/// Reads the compacted metrics topic to the end and keeps this service's latest values.
async fn read_board(settings: &Settings, metrics: &'static [Metric]) -> Result<Differ, Error> {
    let format = settings.publish.format;
    // The service's own series: of its metrics, and of the shared ones (consistency) those of
    // what it measures.
    let activities = metrics.contains(&Metric::Activities);
    let names: Vec<&str> = metrics.iter().map(|m| m.name()).collect();
    let mut latest: HashMap<String, Option<(rust_decimal::Decimal, String)>> = HashMap::new();
    read_to_end(settings, &settings.topics.metrics, |key, payload| {
        if !metric_of_key(key).is_some_and(|n| names.contains(&n))
            || salespulse_aggregate::of_activities(key) != Some(activities)
        {
            return;
        }
        // Records written as protobuf say so in their header; the rest follow the setting.
        let value = payload.and_then(|p| {
            salespulse_publish::decode(p, format)
                .or_else(|| salespulse_publish::decode(p, other_format(format)))
        });
        latest.insert(key.to_owned(), value.map(|r| (r.value, r.name)));
    })
    .await?;
    let mut differ = Differ::default();
    for (k, v) in latest {
        if let (Some(subject), Some((v, name))) = (subject_of_key(&k), v) {
            let name = (!name.is_empty()).then_some(name.as_str());
            differ.seed(subject, k, v, name);
        }
    }
    Ok(differ)
}

fn other_format(f: PublishFormat) -> PublishFormat {
    match f {
        PublishFormat::Json => PublishFormat::Protobuf,
        PublishFormat::Protobuf => PublishFormat::Json,
    }
}

pub(crate) fn format_of(m: &BorrowedMessage<'_>, default: PublishFormat) -> PublishFormat {
    match content_type(m).map(|v| v == salespulse_decode::PROTOBUF_CONTENT_TYPE.as_bytes()) {
        Some(true) => PublishFormat::Protobuf,
        Some(false) => PublishFormat::Json,
        None => default,
    }
}
