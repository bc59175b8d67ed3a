//! The service loop: restore, then consume → decode → aggregate → expose and publish.
//!
//! Delivery: each tick commits one Kafka transaction holding what it produced (metric
//! changes, dead letters, celebrations) and the input offsets past the records behind it (see
//! [`crate::sink::transaction`]), so outputs are exactly once; a snapshot that is due follows
//! in a transaction of its own. State is rebuilt at start-up from the newest snapshot (see
//! [`crate::state::snapshot`]) and by replaying the input after it up to the committed offsets
//! without side effects, so the numbers after a restart are exactly those of an uninterrupted
//! run; the last published board is read back from `sales.metrics` so that series that
//! vanished meanwhile get their tombstones.
//!
//! One tick of the loop runs its stages in order: restore progress, the core's clock,
//! celebrations, the slots group, taking over newly assigned slots, exporting changed series,
//! committing and snapshotting, then lag and readiness. Between ticks, input and roster
//! records are decoded and applied as they arrive.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_aggregate::{Differ, Subject, SubjectSeries};
use salespulse_decode::{Contract, Format};
use salespulse_expose::{AppState, Board, Health};
use tracing::{debug, error, info, warn};

use crate::config::{ServiceSettings, Settings};
use crate::coordination::early::{EarlyBoard, Shown};
use crate::coordination::ownership::{slot_of, Ownership, SlotsContext, LEADER_SLOT};
use crate::coordination::role::Role;
use crate::events::{
    Announced, ConsumerReplaced, InternalEvent, SlotsTakenOver, SnapshotLoaded, StateRestored,
    TakeOverFailed, TakeOverSteps, TickStage, TransactionEnded,
};
use crate::kafka::{ensure_topics, partitions, ReadToEnd, TopicSpec};
use crate::pacer::Pacer;
use crate::sink::transaction::{transactional_id, Ended};
use crate::sink::{create_producer, settle, Outputs};
use crate::source::follow::{Ahead, Announced as AnnouncedKeys, Followed};
use crate::source::offsets::GroupOffsets;
use crate::source::roster::Roster;
use crate::source::watch::{position_in, Stalls, STALL_AFTER};
use crate::source::{
    apply_roster, catch_up_dead_letters, content_type, end_probe, replace_input, InputConsumer,
    InputToAssign, Positions, TopicCounters,
};
use crate::state::processor::{Celebration, Processor};
use crate::state::snapshot::Manifest;
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
    let input = P::input_topic(&settings.topics).to_owned();
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
    if settings.topics.create {
        let mut topics = service_topics(&settings, &input, P::CELEBRATES);
        if svc.divide_input {
            topics.push(TopicSpec {
                name: crate::divided::cells_topic(&svc.group_id, P::SERVICE),
                partitions: settings.topics.slot_count,
                compacted: true,
                segment_ms: Some(crate::divided::CELLS_SEGMENT_MS),
            });
        }
        ensure_topics(&settings, &topics).await?;
    }
    let shared = || Shared {
        service: P::SERVICE,
        settings: &settings,
        svc: &svc,
        contract: &contract,
        input: &input,
        health: &health,
        board: board.clone(),
        ready: ready.clone(),
    };
    loop {
        let ran = if svc.divide_input {
            crate::divided::run_instance::<P>(shared(), &mut shutdown).await
        } else {
            run_instance::<P>(shared(), &mut shutdown).await
        };
        // It stopped being ready as its loop ended.
        if let Some(ended) = ran.as_ref().err().and_then(TransactionEnded::starting_over) {
            ended.emit(&health);
            continue;
        }
        match ran {
            // Logged as the consumer was given up; what it left open is aborted by the next
            // instance's transactional producer as it starts.
            Err(Error::Stalled(_)) => {}
            r => {
                http.abort();
                return r;
            }
        }
    }
}

/// Runs one instance (a transactional producer, the restored state and the loop) until
/// `shutdown` resolves or an error stops it.
async fn run_instance<P: Processor>(
    shared: Shared<'_>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), Error> {
    let settings = shared.settings;
    let id = transactional_id(&shared.svc.group_id, P::SERVICE);
    let producer = create_producer(settings, Some(&id))?;
    let board = shared.board.clone();
    let (mut instance, mut io) = match Instance::<P>::start(shared, &producer).await {
        Ok(started) => started,
        Err(e) => {
            // What the start served (see `EarlyBoard`) is for slots it no longer holds.
            board.clear();
            return Err(e);
        }
    };

    let mut pacer = Pacer::of(&settings.publish);
    let next_tick = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(next_tick);
    let ran: Result<(), Error> = async {
        loop {
            tokio::select! {
                biased;
                _ = &mut *shutdown => {
                    info!("shutting down: flushing outputs and committing offsets");
                    return Ok(());
                }
                _ = &mut next_tick => {
                    let interval = instance.tick(&io.input, &mut pacer).await?;
                    next_tick.as_mut().reset(tokio::time::Instant::now() + interval);
                    instance.watch(&mut io);
                }
                m = io.roster.consumer.recv() => instance.on_roster(m),
                m = io.input.recv() => {
                    let began = Instant::now();
                    if let Err(e) = instance.on_input(&io.input, m).await {
                        instance.produce_failed(e)?;
                    }
                    pacer.worked(began.elapsed());
                    // A backlog worked off: the board is brought up to date now, not at the end
                    // of an interval stretched for the backlog.
                    if pacer.stretched() && instance.caught_up() {
                        next_tick.as_mut().reset(tokio::time::Instant::now());
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = ran {
        instance.shared.ready.store(false, Ordering::Relaxed);
        instance.shared.board.clear();
        instance.slots.ownership.retire();
        let slots = instance.slots.consumer.take();
        drop(instance);
        crate::kafka::close_aside("the group's consumers", (slots, io));
        return Err(e);
    }
    match instance.stop().await {
        // Stopping anyway: the next start redoes what the last transaction held.
        Err(Error::Fenced(why) | Error::Wedged(why)) => {
            warn!(error = %why, "the producer could not go on while stopping")
        }
        r => r?,
    }
    info!("stopped cleanly");
    Ok(())
}

/// The topics a service reads and writes, created when missing.
fn service_topics(settings: &Settings, input: &str, celebrates: bool) -> Vec<TopicSpec> {
    let t = &settings.topics;
    let spec = |name: &str, partitions: i32, compacted: bool| TopicSpec {
        name: name.to_owned(),
        partitions,
        compacted,
        segment_ms: None,
    };
    let mut topics = vec![
        spec(input, t.partitions, false),
        spec(&t.roster, 1, true),
        spec(&t.metrics, t.partitions, true),
        spec(&t.deadletter, t.partitions, false),
        spec(&t.snapshots, 1, true),
        spec(&t.slots, t.slot_count, false),
    ];
    if celebrates {
        topics.push(spec(&t.celebrations, 1, true));
    }
    topics
}

/// What the loop reads from; apart from the instance so that a record borrowed from a
/// consumer can be handed to it.
struct Inputs {
    input: InputConsumer,
    roster: Roster,
}

/// What an instance shares with the rest of the process.
pub(crate) struct Shared<'a> {
    pub service: &'static str,
    pub settings: &'a Settings,
    pub svc: &'a ServiceSettings,
    pub contract: &'a Contract,
    pub input: &'a str,
    pub health: &'a Health,
    pub board: Arc<Board>,
    pub ready: Arc<AtomicBool>,
}

/// Membership of the slots group, which decides which instance exports which series.
struct Slots<'a> {
    /// Always a member, except while one is replaced by a fresh one.
    consumer: Option<BaseConsumer<SlotsContext>>,
    ownership: Ownership,
    count: i32,
    /// Reads the slots' committed offsets; kept connected, as each take-over reads them.
    offsets: GroupOffsets<'a>,
}

/// Snapshot schedule and the newest snapshot.
struct Snapshots {
    enabled: bool,
    /// A snapshot's positions are those of one group in one service's input.
    owner: String,
    last: Option<Manifest>,
    /// The newest snapshot whose transaction committed.
    committed: Option<Manifest>,
    /// A snapshot was written in the open transaction.
    in_txn: bool,
    every: Duration,
    at: Instant,
}

/// Celebrations already on their topic are never announced again (read when this instance
/// takes the leader slot); those decided while another instance leads wait in `pending`
/// until they are seen there.
#[derive(Default)]
struct Celebrations {
    announced: HashSet<String>,
    /// Where the last read of the topic into `announced` ended (partition -> offset of the
    /// first record not read). Every instance keeps what it read, leader or not: one that
    /// takes the leader slot reads only what came after, not the whole topic (in a hand-over,
    /// that read was most of the wait; docs/benchmarks.md).
    read_to: BTreeMap<i32, i64>,
    pending: VecDeque<(Instant, Celebration)>,
    /// Announced in the open transaction: pending again if it is aborted.
    in_txn: Vec<(Instant, Celebration)>,
}

struct Instance<'a, P: Processor> {
    shared: Shared<'a>,
    started: Instant,
    core: P,
    out: Outputs<'a>,
    input_counters: TopicCounters,
    roster_counters: TopicCounters,
    /// What this instance exported to the metrics topic (read back from the topic whenever its
    /// slots change). `/metrics` shows the same series: each tick's changes go to both.
    differ: Differ,
    role: Role,
    slots: Slots<'a>,
    positions: Positions,
    parts: Vec<i32>,
    snapshots: Snapshots,
    celebrations: Celebrations,
    /// The topics the first take-over reads, as read since the start.
    ahead: Option<ReadAhead>,
    /// What the board serves since the start, read from the metrics topic for the slots of
    /// the generation named (see [`EarlyBoard`]), until the first take-over.
    early: Option<Shown>,
    /// Reads and commits the input group's offsets.
    offsets: GroupOffsets<'a>,
    /// The input group's metadata, under which the leader commits input offsets.
    input_group: Arc<ConsumerGroupMetadata>,
    /// The input offsets committed last.
    committed: std::collections::HashMap<i32, i64>,
    /// The ends of the input partitions as last measured, and the client that measures them.
    highs: BTreeMap<i32, i64>,
    end_probe: BaseConsumer,
    /// The input partitions read to their end since the last tick.
    at_end: BTreeSet<i32>,
    lag_checked: Instant,
    max_lag: Option<i64>,
    /// The partitions whose end the last lag round could read, with the position and end it
    /// measured, until the stall check takes them.
    lag_round: Option<Vec<(i32, i64, i64)>>,
    input_stalls: Stalls<i32>,
    /// When the last transaction committed (or there was nothing to commit).
    settled_at: Instant,
}

impl<'a, P: Processor> Instance<'a, P> {
    /// Restores the state (snapshot, roster, then the input is assigned for the replay) and
    /// joins the slots group.
    async fn start(s: Shared<'a>, producer: &'a FutureProducer) -> Result<(Self, Inputs), Error> {
        let started = Instant::now();
        let ownership = Ownership::default();
        let (core, last, connected, ahead, early) =
            restore_connected::<P>(&s, producer, &ownership)?;
        let Connected {
            slots: consumer,
            slot_count: count,
            slots_offsets,
            mut roster,
            mut offsets,
            input,
            end_probe,
        } = connected;
        // The input group's committed offsets are read after the snapshot: a transaction that
        // commits a snapshot commits the input offsets it reflects, so the offsets read are
        // never behind the snapshot's.
        let positions = last.as_ref().map(|m| &m.positions);
        let (input, parts, positions) = input.assign(&mut offsets, positions)?;
        let out = Outputs::new(
            producer,
            s.health,
            &s.settings.topics.deadletter,
            P::SERVICE,
        );
        let mut me = Instance {
            input_counters: TopicCounters::new(s.health, s.input),
            roster_counters: TopicCounters::new(s.health, &s.settings.topics.roster),
            started,
            core,
            out,
            differ: Differ::default(),
            role: Role::new(positions.restoring()),
            slots: Slots {
                consumer: Some(consumer),
                ownership,
                count,
                offsets: slots_offsets,
            },
            positions,
            parts,
            snapshots: Snapshots {
                enabled: s.svc.snapshot_interval_seconds > 0,
                owner: format!("{}/{}", s.svc.group_id, P::SERVICE),
                committed: last.clone(),
                in_txn: false,
                last,
                every: Duration::from_secs(s.svc.snapshot_interval_seconds),
                at: Instant::now(),
            },
            celebrations: Celebrations::default(),
            ahead: Some(ahead),
            early,
            offsets,
            input_group: input
                .group_metadata()
                .map(Arc::new)
                .ok_or_else(|| Error::Config("the input consumer has no group".into()))?,
            committed: std::collections::HashMap::new(),
            highs: BTreeMap::new(),
            end_probe,
            at_end: BTreeSet::new(),
            lag_checked: Instant::now(),
            max_lag: None,
            lag_round: None,
            input_stalls: Stalls::new(STALL_AFTER),
            settled_at: Instant::now(),
            shared: s,
        };
        me.load_roster(&mut roster).await?;
        let h = me.shared.health;
        h.restore_replayed.set(me.positions.restore_total);
        if !me.role.is_restoring() {
            h.restore_seconds.set(me.started.elapsed().as_secs_f64());
        }
        info!(topic = %me.shared.input, partitions = me.parts.len(), restore_records = me.positions.restore_total, "consuming");
        Ok((me, Inputs { input, roster }))
    }

    async fn load_roster(&mut self, roster: &mut Roster) -> Result<(), Error> {
        let topic = &self.shared.settings.topics.roster;
        let end = std::mem::take(&mut roster.end);
        let mut reader = ReadToEnd::new(&roster.consumer, topic, end, Default::default());
        let mut records = 0u64;
        while let Some(m) = reader.next().await? {
            self.on_roster_record(&m);
            records += 1;
        }
        info!(records, "roster loaded");
        Ok(())
    }

    fn on_roster(&mut self, m: KafkaResult<BorrowedMessage<'_>>) {
        match m {
            Ok(m) => self.on_roster_record(&m),
            Err(e) => warn!(error = %e, "roster consumer error"),
        }
    }

    fn on_roster_record(&mut self, m: &BorrowedMessage<'_>) {
        let s = &self.shared;
        apply_roster(
            s.contract,
            s.health,
            &mut self.roster_counters,
            &mut self.core,
            m,
        );
    }

    /// Applies a record and what is already fetched after it, without going back through the
    /// select: the per-record cost of the loop stays close to that of the consumer itself.
    async fn on_input(
        &mut self,
        consumer: &InputConsumer,
        first: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), Error> {
        let mut m = Some(first);
        let mut batch = 0;
        // One look at the clock per batch: a batch takes milliseconds, and the clock only
        // serves to reject records from the future.
        let now = now_ms();
        while let Some(r) = m.take() {
            match r {
                Ok(m) => self.on_input_record(&m, now).await?,
                Err(KafkaError::PartitionEOF(p)) => {
                    self.at_end.insert(p);
                }
                Err(e) => warn!(error = %e, "input consumer error"),
            }
            batch += 1;
            if batch < MAX_BATCH {
                m = consumer.recv().now_or_never();
            }
        }
        Ok(())
    }

    /// Applies one input record. A replayed record announced its celebrations in the run that
    /// processed it live; only the leader counts and dead-letters records.
    async fn on_input_record(&mut self, m: &BorrowedMessage<'_>, now: i64) -> Result<(), Error> {
        let p = m.partition();
        let live = self.positions.is_live(p, m.offset());
        let payload = m.payload().unwrap_or_default();
        self.core.set_live(live);
        let contract = self.shared.contract;
        let res = Format::from_content_type(content_type(m))
            .and_then(|f| self.core.handle(contract, m.key(), payload, f, now));
        if live && self.role.leads() {
            match res {
                Ok(outcome) => self.input_counters.count(m, outcome),
                Err(e) => {
                    // Past the record first: should its dead letter fail, the take-over
                    // that follows the abort redoes it.
                    self.positions.next.insert(p, m.offset() + 1);
                    self.input_counters.observe(m);
                    return self.out.dead_letter(m, &e).await;
                }
            }
        }
        self.positions.next.insert(p, m.offset() + 1);
        Ok(())
    }

    /// Runs one tick; returns how long its work on the state took (moving the windows and
    /// exporting the changes), not counting waits for the broker.
    async fn on_tick(&mut self, input: &InputConsumer) -> Result<Duration, Error> {
        self.at_end.clear();
        self.check_restored();
        let began = Instant::now();
        self.core.tick(now_ms());
        let mut work = began.elapsed();
        TickStage {
            stage: "clock",
            took: work,
        }
        .emit(self.shared.health);
        self.announce_celebrations().await?;
        self.poll_slots()?;
        let (slots, generation) = self.slots.ownership.current();
        if self.role.must_take_over(generation) {
            self.take_over(&slots, generation).await?;
            // A new leader announces what it kept pending before this tick's commit and
            // snapshot say that the records behind it are done.
            self.announce_celebrations().await?;
        }
        if !self.role.leads() {
            self.expire_pending_wins();
        }
        // Changes go out only once the owned slots are taken over (which starts from the
        // whole state, so nothing drained meanwhile is missed).
        if self.role.exports(generation) {
            let began = Instant::now();
            self.export_changes(&slots).await?;
            let took = began.elapsed();
            TickStage {
                stage: "export",
                took,
            }
            .emit(self.shared.health);
            work += took;
        }
        self.commit_and_snapshot().await?;
        self.measure_lag(input);
        self.report_health();
        Ok(work)
    }

    fn check_restored(&mut self) {
        if self.role.is_restoring() && !self.positions.restoring() {
            self.role.restored();
            StateRestored {
                records: self.positions.restore_total,
                seconds: self.started.elapsed().as_secs_f64(),
            }
            .emit(self.shared.health);
        }
    }

    /// Only live records leave celebrations (see `on_input_record`). The leader announces
    /// them before it may give up its slots in the poll that follows.
    async fn announce_celebrations(&mut self) -> Result<(), Error> {
        for c in self.core.take_celebrations() {
            self.celebrations.pending.push_back((Instant::now(), c));
        }
        if !self.role.leads() {
            return Ok(());
        }
        let topic = &self.shared.settings.topics.celebrations;
        for (at, c) in std::mem::take(&mut self.celebrations.pending) {
            if self.celebrations.announced.insert(c.key.clone()) {
                Announced {
                    topic,
                    key: &c.key,
                    kind: c.kind,
                }
                .emit(self.shared.health);
                let rec = FutureRecord::to(topic)
                    .key(c.key.as_bytes())
                    .payload(c.value.as_slice());
                self.out.enqueue(rec).await?;
                self.celebrations.in_txn.push((at, c));
            }
        }
        Ok(())
    }

    /// The leader announces celebrations; the others keep them a while in case it fails
    /// before it does.
    fn expire_pending_wins(&mut self) {
        let pending = &mut self.celebrations.pending;
        while pending.len() > MAX_PENDING_WINS
            || pending
                .front()
                .is_some_and(|w| w.0.elapsed() > PENDING_WINS_FOR)
        {
            pending.pop_front();
        }
    }

    /// Group membership: the rebalance callbacks run inside this poll. A leader that gives up
    /// its slots there commits what it has processed, outputs flushed.
    fn poll_slots(&mut self) -> Result<(), Error> {
        if let Some(consumer) = &self.slots.consumer {
            tokio::task::block_in_place(|| while consumer.poll(Duration::ZERO).is_some() {});
        }
        if self.slots.ownership.take_given_up() {
            // Before anything else is produced or committed: what the transaction holds was
            // exported for slots this instance no longer has.
            tokio::task::block_in_place(|| crate::sink::transaction::abort(self.out.producer))?;
            self.aborted("the slots were given up");
        }
        if let Some(waited) = self
            .slots
            .ownership
            .awaited()
            .filter(|w| *w >= SLOTS_REJOIN_AFTER)
        {
            // Revoked (or new) and never assigned since: seen after a broker restart, when
            // the group forgets the member. A fresh member gets an assignment.
            warn!(
                waited_s = waited.as_secs(),
                "no slot assignment since the last revocation; joining the slots group again"
            );
            let ownership = self.slots.ownership.clone();
            // The old member leaves before the new one joins.
            drop(self.slots.consumer.take());
            let fresh = join_slots(&self.shared, ownership)?;
            self.slots.consumer = Some(fresh);
        }
        Ok(())
    }

    /// Starts over from what the metrics topic holds for the newly assigned slots. Not leading
    /// (no commits, snapshots or announcements) until the take-over is complete; one that
    /// fails (the broker away) is retried at the next tick, from the start, and what it
    /// produced is aborted: a new leader's dead letters are redone from the committed offsets.
    async fn take_over(&mut self, slots: &BTreeSet<i32>, generation: u64) -> Result<(), Error> {
        let was_leader = self.role.leads();
        self.role.begin_take_over();
        // A board served since the start for these very slots is brought to the state;
        // otherwise it starts empty.
        let shown = match self.early.take() {
            Some((g, shown)) if g == generation => shown,
            _ => {
                self.shared.board.clear();
                Differ::default()
            }
        };
        let mut steps = TakeOverSteps::default();
        match self
            .take_over_slots(slots, was_leader, &mut steps, shown)
            .await
        {
            Ok((leads, published)) => {
                self.role.took_over(generation, leads);
                SlotsTakenOver {
                    slots,
                    leader: leads,
                    series: self.shared.board.len(),
                    published,
                    steps,
                }
                .emit(self.shared.health);
            }
            Err(error) => {
                TakeOverFailed { error: &error }.emit(self.shared.health);
                self.shared.board.clear();
                tokio::task::block_in_place(|| crate::sink::transaction::abort(self.out.producer))?;
                self.aborted("the take-over failed");
            }
        }
        Ok(())
    }

    /// Returns whether this instance leads, and how many records it published.
    async fn take_over_slots(
        &mut self,
        slots: &BTreeSet<i32>,
        was_leader: bool,
        steps: &mut TakeOverSteps,
        mut shown: Differ,
    ) -> Result<(bool, usize), Error> {
        if slots.is_empty() {
            self.differ = Differ::default();
            return Ok((false, 0));
        }
        let leads = slots.contains(&LEADER_SLOT);
        let start = Instant::now();
        let count = self.slots.count;
        let owns = |s: &Subject| slots.contains(&slot_of(s, count));
        let full: Vec<SubjectSeries> = self
            .core
            .snapshot()
            .into_iter()
            .filter(|s| owns(&s.subject))
            .collect();
        // Every instance holds the whole state, so the board (empty since the revocation, or
        // what the start served, `shown`) serves the slots' series at once; the topic is read
        // back after, to publish only what differs from what it holds. No record is applied
        // until the take-over ends, so the board and the topic get the same state.
        self.shared
            .board
            .apply(&shown.diff_with_gone(full.clone(), |_| true));
        steps.serving = start.elapsed();
        let began = Instant::now();
        self.wait_previous_owners(slots)?;
        steps.previous_owners = began.elapsed();
        // What the topic holds for these slots, read while a new leader reads what it needs.
        // The celebrations too for a new leader, read on from where the start read them to
        // when there is such a read (see `Instance::start`).
        let began = Instant::now();
        let settings = self.shared.settings.clone();
        let becomes_leader = leads && !was_leader;
        let ahead = self.ahead.take();
        // Taken out for the read; a take-over that fails reads the topic whole next time.
        let announced = (P::CELEBRATES && becomes_leader).then(|| {
            let c = &mut self.celebrations;
            Followed::resumed(
                &settings.topics.celebrations,
                AnnouncedKeys(std::mem::take(&mut c.announced)),
                std::mem::take(&mut c.read_to),
            )
        });
        let reads = AbortOnDrop(tokio::spawn(async move {
            let ahead = match ahead {
                Some(a) => a.join().await.ok(),
                None => None,
            };
            let read = match ahead {
                Some(a) => a.read_on(&settings).await,
                None => Ahead::read(&settings, P::METRICS, announced).await,
            };
            (read, began.elapsed())
        }));
        if becomes_leader {
            let began = Instant::now();
            self.take_leadership().await?;
            steps.leadership = began.elapsed();
        }
        let (read, took) = reads.join().await;
        let Ahead { board, announced } = read?;
        self.differ = board.kept.into_differ();
        // Kept whoever leads: the first take-over's comes from the start's read ahead.
        if let Some((AnnouncedKeys(keys), at)) = announced.map(Followed::into_parts) {
            self.celebrations.announced = keys;
            self.celebrations.read_to = at;
        }
        steps.board = took;
        let changes = self.differ.diff_with_gone(full, owns);
        let t = &self.shared.settings.topics;
        let format = self.shared.settings.publish.format;
        self.out.publish(&t.metrics, &changes, format).await?;
        steps.total = start.elapsed();
        Ok((leads, changes.len()))
    }

    /// Waits until no transaction of a previous owner of `slots` is undecided. Each
    /// transaction commits offsets of its owner's slots, and a read of committed offsets that
    /// asks for stable ones is answered only once the transactions holding them are committed
    /// or aborted (as a Kafka Streams task waits for its input offsets): an owner blocked in
    /// its commit while the group moved on (its coordinator away) may still commit, and what it
    /// commits must be on the topic before the board is read back.
    fn wait_previous_owners(&mut self, slots: &BTreeSet<i32>) -> Result<(), Error> {
        let mut tpl = TopicPartitionList::new();
        for slot in slots {
            tpl.add_partition(&self.shared.settings.topics.slots, *slot);
        }
        self.slots.offsets.committed(&tpl).map(|_| ())
    }

    /// Taking the leader slot: the dead letters the previous leader may not have produced are
    /// (the celebrations it announced are read alongside, see `take_over_slots`).
    async fn take_leadership(&mut self) -> Result<(), Error> {
        let s = &self.shared;
        let caught = catch_up_dead_letters::<P>(
            s.settings,
            s.contract,
            &mut self.offsets,
            s.input,
            &mut self.positions,
            &mut self.out,
        )
        .await?;
        info!(
            dead_letters = caught,
            "leading: org series, dead letters, celebrations, offsets and snapshots"
        );
        Ok(())
    }

    /// Exports the changed series of the owned slots: to /metrics and to the metrics topic.
    async fn export_changes(&mut self, slots: &BTreeSet<i32>) -> Result<(), Error> {
        let subjects = self.owned_changes(slots);
        self.publish_changes(subjects).await
    }

    fn owned_changes(&mut self, slots: &BTreeSet<i32>) -> Vec<SubjectSeries> {
        let count = self.slots.count;
        self.core
            .drain_changes()
            .into_iter()
            .filter(|s| slots.contains(&slot_of(&s.subject, count)))
            .collect()
    }

    async fn publish_changes(&mut self, subjects: Vec<SubjectSeries>) -> Result<(), Error> {
        let changes = self.differ.diff(subjects);
        self.shared.board.apply(&changes);
        let t = &self.shared.settings.topics;
        let format = self.shared.settings.publish.format;
        self.out.publish(&t.metrics, &changes, format).await
    }

    /// Commits the tick's transaction: what this instance produced since the last commit,
    /// with the leader's input offsets and the slots group's metadata, which the broker checks
    /// so that a member the group moved on from commits nothing. A snapshot, when one is due,
    /// follows in a transaction of its own (see [`Instance::snapshot_and_commit`]).
    async fn commit_and_snapshot(&mut self) -> Result<(), Error> {
        self.commit_transaction().await?;
        if self.snapshots.at.elapsed() >= self.snapshots.every {
            self.snapshot_and_commit().await?;
        }
        Ok(())
    }

    /// Writes a snapshot as of the positions just committed, and commits it with them again.
    /// Not in the tick's transaction: the broker aborts a transaction `transaction.timeout.ms`
    /// after its first record, and encoding and writing a large state takes seconds of that
    /// (48 MB took 5.5 s in a debug build), on top of a tick interval stretched for a backlog.
    /// A transaction of its own starts its clock at the snapshot's first chunk. When the tick's
    /// commit was refused, the instance no longer leads and writes none.
    async fn snapshot_and_commit(&mut self) -> Result<(), Error> {
        if self.role.leads() && self.snapshots.enabled && !self.role.is_restoring() {
            self.write_snapshot().await?;
            self.snapshots.at = Instant::now();
            self.commit_transaction().await?;
        }
        Ok(())
    }

    async fn commit_transaction(&mut self) -> Result<(), Error> {
        let mut input = TopicPartitionList::new();
        if self.role.leads() {
            for (p, o) in self.positions.committable() {
                input
                    .add_partition_offset(self.shared.input, p, Offset::Offset(o))
                    .map_err(|e| Error::kafka("building the commit", e))?;
            }
        }
        let moved = input
            .elements()
            .iter()
            .any(|e| self.committed.get(&e.partition()) != e.offset().to_raw().as_ref());
        let (mut produced, queued) = self.out.take_pending();
        if queued == 0 && !moved && !self.snapshots.in_txn {
            self.settled_at = Instant::now();
            return Ok(());
        }
        let member = self.slots.ownership.member();
        let mut offsets = vec![(input, self.input_group.clone())];
        let slots_topic = &self.shared.settings.topics.slots;
        if let Some(m) = &member {
            let mut tpl = TopicPartitionList::new();
            for slot in self.slots.ownership.current().0 {
                tpl.add_partition_offset(slots_topic, slot, Offset::Offset(0))
                    .map_err(|e| Error::kafka("building the commit", e))?;
            }
            offsets.push((tpl, m.0.clone()));
        } else if queued > 0 || self.snapshots.in_txn {
            // Produced without an assignment to commit under: the slots were given up.
            tokio::task::block_in_place(|| crate::sink::transaction::abort(self.out.producer))?;
            self.aborted("produced without an assignment");
            return Ok(());
        }
        let producer = self.out.producer;
        let began = Instant::now();
        // Acknowledged first (see `transaction::commit`); a refused record aborts.
        if let Err(e) = settle(&mut produced).await {
            return self.produce_failed(e);
        }
        let r =
            tokio::task::block_in_place(|| crate::sink::transaction::commit(producer, &offsets))?;
        match r {
            Ended::Committed => {
                TickStage {
                    stage: "commit",
                    took: began.elapsed(),
                }
                .emit(self.shared.health);
                TransactionEnded {
                    outcome: "committed",
                    why: None,
                }
                .emit(self.shared.health);
                for e in offsets[0].0.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        self.committed.insert(e.partition(), o);
                    }
                }
                self.celebrations.in_txn.clear();
                self.snapshots.committed.clone_from(&self.snapshots.last);
                self.snapshots.in_txn = false;
                self.settled_at = Instant::now();
            }
            Ended::Aborted => self.aborted("the commit was refused"),
        }
        Ok(())
    }

    /// A record that could not be produced (timed out while a partition had no leader, purged
    /// by an abort) dooms the open transaction: it is aborted and the slots taken over again
    /// from what is committed, rather than the service stopping. Failures that go on for
    /// longer than librdkafka keeps a record stop it, with the error.
    fn produce_failed(&mut self, e: Error) -> Result<(), Error> {
        crate::sink::transaction::abort_unless_stalled(self.out.producer, self.settled_at, e)?;
        self.aborted("a record could not be produced");
        Ok(())
    }

    /// The open transaction was aborted: nothing produced since the last commit is visible.
    /// The slots are taken over again (the metrics topic read back, and as leader the dead
    /// letters redone from the committed offsets and celebrations re-announced).
    fn aborted(&mut self, why: &str) {
        TransactionEnded {
            outcome: "aborted",
            why: Some(why),
        }
        .emit(self.shared.health);
        let _ = self.out.take_pending();
        self.role.abandon();
        let c = &mut self.celebrations;
        for (at, celebration) in c.in_txn.drain(..).rev() {
            c.announced.remove(&celebration.key);
            c.pending.push_front((at, celebration));
        }
        self.snapshots.last.clone_from(&self.snapshots.committed);
        self.snapshots.in_txn = false;
    }

    /// Saves the core's state as of the input positions; every output produced for the
    /// records before them must already be acknowledged.
    async fn write_snapshot(&mut self) -> Result<(), Error> {
        let took = Instant::now();
        let state = self.core.save();
        let positions: BTreeMap<i32, i64> =
            self.positions.next.iter().map(|(p, o)| (*p, *o)).collect();
        let s = &self.shared;
        let previous = self.snapshots.last.as_ref();
        let m = crate::state::snapshot::save(
            self.out.producer,
            s.settings,
            s.health,
            &self.snapshots.owner,
            (&state, took),
            positions,
            previous,
        )
        .await?;
        self.snapshots.last = Some(m);
        self.snapshots.in_txn = true;
        Ok(())
    }

    /// A round trip to the broker per partition: done every few seconds, not per tick — but at
    /// every tick while the last measure kept a restored instance from being ready, so that one
    /// that has caught up (a replay ended, a backlog worked off) is ready at its next tick
    /// rather than up to [`LAG_EVERY`] later. A replay is never ready, and ticks often.
    fn measure_lag(&mut self, consumer: &InputConsumer) {
        let ready_max_lag = self.shared.svc.ready_max_lag;
        let held_back =
            !self.role.is_restoring() && self.max_lag.is_none_or(|lag| lag > ready_max_lag);
        if self.lag_checked.elapsed() < LAG_EVERY && !held_back {
            return;
        }
        self.lag_checked = Instant::now();
        let input = self.shared.input;
        // librdkafka's position moves past what it never hands over (commit markers, records
        // of aborted transactions); the offset after the last record applied does not.
        let read = consumer.position().ok();
        let mut worst = 0;
        let mut measured = Vec::new();
        for p in &self.parts {
            let high = tokio::task::block_in_place(|| {
                self.end_probe
                    .fetch_watermarks(input, *p, Duration::from_secs(2))
            });
            if let Ok((_, high)) = high {
                self.highs.insert(*p, high);
                let applied = self.positions.next.get(p).copied().unwrap_or(0);
                let at = position_in(read.as_ref(), input, *p, applied);
                measured.push((*p, at, high));
                let lag = (high - at).max(0);
                worst = worst.max(lag);
                let partition = p.to_string();
                let gauge = self
                    .shared
                    .health
                    .lag
                    .with_label_values(&[input, &partition]);
                gauge.set(lag);
            }
        }
        self.max_lag = Some(worst);
        self.lag_round = Some(measured);
    }

    /// A tick of the loop; returns how long until the next.
    async fn tick(&mut self, input: &InputConsumer, pacer: &mut Pacer) -> Result<Duration, Error> {
        let began = Instant::now();
        let took = match self.on_tick(input).await {
            Ok(took) => took,
            Err(e) => {
                self.produce_failed(e)?;
                Duration::ZERO
            }
        };
        let behind = self.behind();
        pacer.record(took, behind);
        let interval = pacer.interval();
        debug!(
            work_s = took.as_secs_f64(),
            with_waits_s = began.elapsed().as_secs_f64(),
            behind,
            next_s = interval.as_secs_f64(),
            "ticked"
        );
        self.shared.health.tick_interval.set(interval.as_secs_f64());
        Ok(interval)
    }

    /// Replaces the roster or input consumer when it stood still behind its end.
    fn watch(&mut self, io: &mut Inputs) {
        let (settings, health) = (self.shared.settings, self.shared.health);
        if let Err(e) = tokio::task::block_in_place(|| io.roster.watch(settings, health)) {
            warn!(error = %e, "could not replace the roster consumer; trying again later");
        }
        let Some((stalled, at)) = self.input_stalled(&io.input) else {
            return;
        };
        let (group, input) = (&self.shared.svc.group_id, self.shared.input);
        match tokio::task::block_in_place(|| replace_input(settings, group, input, &at)) {
            Ok(replacement) => {
                let old = std::mem::replace(&mut io.input, replacement);
                crate::kafka::close_aside("a stalled input consumer", old);
                let partitions: Vec<(String, i32)> =
                    stalled.iter().map(|p| (input.to_owned(), *p)).collect();
                ConsumerReplaced {
                    consumer: "input",
                    what: "the input consumer",
                    partitions: &partitions,
                    stalled_for: STALL_AFTER,
                }
                .emit(health);
            }
            Err(e) => {
                warn!(error = %e, "could not replace the input consumer; trying again later")
            }
        }
    }

    /// After a lag round: the input partitions that stood at one position behind their end
    /// for too long (librdkafka can leave an assigned partition without fetches after a broker
    /// restart, see `source/watch.rs`), with the position of every partition to go on from.
    /// The position is librdkafka's where it has one: it moves past commit markers, which are
    /// never handed over.
    fn input_stalled(
        &mut self,
        consumer: &InputConsumer,
    ) -> Option<(Vec<i32>, BTreeMap<i32, i64>)> {
        let measured = self.lag_round.take()?;
        let stalled = self.input_stalls.check(Instant::now(), measured);
        if stalled.is_empty() {
            return None;
        }
        let input = self.shared.input;
        let read = consumer.position().ok();
        let at: BTreeMap<i32, i64> = self
            .parts
            .iter()
            .map(|p| {
                let ours = self.positions.next.get(p).copied().unwrap_or(0);
                (*p, position_in(read.as_ref(), input, *p, ours))
            })
            .collect();
        Some((stalled, at))
    }

    /// Whether every input partition was read to its end since the last tick.
    fn caught_up(&self) -> bool {
        self.parts.iter().all(|p| self.at_end.contains(p))
    }

    /// Whether some input partition is further behind than readiness allows. Not while
    /// restoring: a replay publishes nothing, and readiness is decided at a tick.
    fn behind(&self) -> bool {
        !self.role.is_restoring()
            && self
                .positions
                .behind(&self.highs, self.shared.svc.ready_max_lag)
    }

    fn report_health(&self) {
        let h = self.shared.health;
        self.input_counters.flush();
        self.roster_counters.flush();
        for (kind, n) in self.core.state_sizes() {
            h.state.with_label_values(&[kind]).set(n as i64);
        }
        let max_lag = self.max_lag.unwrap_or(i64::MAX);
        let is_ready = !self.role.is_restoring()
            && max_lag <= self.shared.svc.ready_max_lag
            && self.slots.ownership.assigned();
        self.shared.ready.store(is_ready, Ordering::Relaxed);
        h.ready.set(i64::from(is_ready));
    }

    /// Publishes what is left, commits and writes a last snapshot; leaving the slots group
    /// (dropping its consumer) hands the slots over at once.
    async fn stop(mut self) -> Result<(), Error> {
        self.shared.ready.store(false, Ordering::Relaxed);
        self.core.tick(now_ms());
        // The last commit covers every record read, so their celebrations go out first.
        self.announce_celebrations().await?;
        let (slots, generation) = self.slots.ownership.current();
        if self.role.exports(generation) {
            let subjects = self.owned_changes(&slots);
            self.publish_changes(subjects).await?;
        }
        self.commit_transaction().await?;
        self.snapshot_and_commit().await?;
        // The callbacks clear the board first.
        drop(self.slots);
        Ok(())
    }
}

/// The metrics and celebrations topics read in the background.
type ReadAhead = AbortOnDrop<Result<Ahead, Error>>;

/// A task that is stopped when its handle is dropped unawaited (its caller failed first).
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    pub async fn join(mut self) -> T {
        (&mut self.0)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` on a thread of its own, with a runtime of its own: it is not held back by the
/// CPU-bound tasks that may occupy every worker of the service's runtime meanwhile (a
/// rebuild's restore and reads), and it runs to its end even if no one waits for it any more.
pub(crate) fn on_own_thread<T: Send + 'static>(
    name: &str,
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, Error>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // One worker, on a runtime that lets the readers block in place (a current-thread
            // runtime does not).
            let out = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| Error::Io("starting a runtime".into(), e))
                .and_then(|rt| rt.block_on(work));
            let _ = tx.send(out);
        });
    let what = name.to_owned();
    async move {
        spawned.map_err(|e| Error::Io(format!("starting {what}"), e))?;
        rx.await.unwrap_or_else(|_| {
            Err(Error::Io(
                format!("{what} ended without a result"),
                std::io::Error::other("the thread panicked"),
            ))
        })
    }
}

/// The clients an instance connects while its state is restored.
struct Connected<'a> {
    /// A member of the slots group, and the number of slots.
    slots: BaseConsumer<SlotsContext>,
    slot_count: i32,
    slots_offsets: GroupOffsets<'a>,
    roster: Roster,
    offsets: GroupOffsets<'a>,
    input: InputToAssign,
    end_probe: BaseConsumer,
}

impl<'a> Connected<'a> {
    /// Connects the group's clients. Blocking: round trips to the broker.
    fn connect(s: &Shared<'a>, ownership: Ownership) -> Result<Connected<'a>, Error> {
        let slots = join_slots(s, ownership)?;
        let slot_count = partitions(&slots, &s.settings.topics.slots)?.len();
        Ok(Connected {
            slot_count: i32::try_from(slot_count).unwrap_or(1),
            slots,
            slots_offsets: GroupOffsets::new(s.settings, &slots_group(s))?,
            roster: Roster::connect(s.settings, &s.svc.group_id)?,
            offsets: GroupOffsets::new(s.settings, &s.svc.group_id)?,
            input: InputToAssign::connect(s.settings, &s.svc.group_id, s.input)?,
            end_probe: end_probe(s.settings)?,
        })
    }
}

/// A restored core, the newest snapshot's manifest, the clients connected meanwhile, the
/// topics being read ahead, and what the board was filled with (see [`EarlyBoard`]).
type Restored<'a, P> = (P, Option<Manifest>, Connected<'a>, ReadAhead, Option<Shown>);

/// Initialises the transactional producer, then restores the core while the group's clients
/// connect. Restoring is reading and rebuilding; connecting is round trips to the broker: side
/// by side, a start takes the longer of the two, not their sum. The producer comes first:
/// once it has found its transaction coordinator the cluster answers, and clients made while
/// a broker was away and no coordinator answered could stay without metadata for minutes
/// (tests/cluster.rs).
fn restore_connected<'a, P: Processor>(
    s: &Shared<'a>,
    producer: &FutureProducer,
    ownership: &Ownership,
) -> Result<Restored<'a, P>, Error> {
    // Before any other client is made: clients made while a broker was away and no
    // transaction coordinator answered could stay without metadata for minutes
    // (docs/design.md, "State snapshots").
    tokio::task::block_in_place(|| crate::sink::transaction::init(producer))?;
    // What the first take-over reads back (the metrics and celebrations topics) is read
    // while the state is restored; the take-over then reads only what came after. Once the
    // metrics topic is read and the slots are assigned, the board serves the slots' series
    // from it until the first take-over, if both come before the restore ends.
    let early = EarlyBoard::open();
    let ahead = {
        let settings = s.settings.clone();
        let (early, ownership, board) = (early.clone(), ownership.clone(), s.board.clone());
        AbortOnDrop(tokio::spawn(async move {
            let serve = async |read: &crate::source::follow::Board| {
                while !early.fill(read, &ownership, &board) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let announced = P::CELEBRATES
                .then(|| Followed::new(&settings.topics.celebrations, AnnouncedKeys::default()));
            Ahead::read_serving(&settings, P::METRICS, announced, serve).await
        }))
    };
    let runtime = tokio::runtime::Handle::current();
    let (restored, connected) = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let connecting = scope.spawn(|| {
                // Stream consumers are driven by the runtime.
                let _entered = runtime.enter();
                let connected = Connected::connect(s, ownership.clone())?;
                // The assignment comes with polls of the member, which the loop does later.
                while early.is_open() && !ownership.assigned() {
                    let _ = connected.slots.poll(Duration::from_millis(5));
                }
                if ownership.assigned() {
                    let (slots, generation) = ownership.current();
                    early.assigned(slots, generation, connected.slot_count);
                }
                Ok(connected)
            });
            let restored = runtime.block_on(restore_snapshot::<P>(s));
            let shown = early.close();
            let connected = connecting
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (restored.map(|r| (r, shown)), connected)
        })
    });
    let connected = connected?;
    let ((core, last), shown) = restored?;
    Ok((core, last, connected, ahead, shown))
}

/// A new core, restored from the newest snapshot when there is a usable one.
async fn restore_snapshot<P: Processor>(s: &Shared<'_>) -> Result<(P, Option<Manifest>), Error> {
    let new_core = || -> Result<P, Error> {
        let mut core = P::new(s.contract, s.settings.calendar()?, now_ms());
        core.configure_regions(&s.settings.regions.team_list());
        if P::CELEBRATES {
            core.enable_celebrations(&s.settings.alerts);
        }
        Ok(core)
    };
    if s.svc.snapshot_interval_seconds == 0 {
        return Ok((new_core()?, None));
    }
    let owner = format!("{}/{}", s.svc.group_id, P::SERVICE);
    load_snapshot(s, &owner, new_core, |_| true).await
}

/// A core from `new_core` with the newest snapshot of `owner` loaded into it, if there is one
/// that `usable` accepts and that decodes; else an empty one.
pub(crate) async fn load_snapshot<P: Processor>(
    s: &Shared<'_>,
    owner: &str,
    new_core: impl Fn() -> Result<P, Error>,
    usable: impl Fn(&Manifest) -> bool,
) -> Result<(P, Option<Manifest>), Error> {
    let core = new_core()?;
    let read = Instant::now();
    // The state is rebuilt off the runtime's threads from each chunk as it is read (the
    // snapshots of a divided instance's partitions are read together, and restored in turns:
    // `restore_turns`).
    let (pieces, received) = std::sync::mpsc::channel::<Vec<u8>>();
    let runtime = tokio::runtime::Handle::current();
    let restoring = tokio::task::spawn_blocking(move || {
        let mut core = core;
        let mut received = received.into_iter().peekable();
        // Nothing sent: there is no snapshot to load.
        received.peek()?;
        // The chunks of the others go on arriving meanwhile.
        let _turn = runtime.block_on(restore_turns().acquire());
        let began = Instant::now();
        let mut bytes = 0;
        let mut counted = received.inspect(|p| bytes += p.len());
        let restored = core.restore_pieces(&mut counted);
        Some((core, restored, bytes, began.elapsed()))
    });
    let loaded = crate::state::snapshot::load(s.settings, owner, usable, pieces).await;
    let read_seconds = read.elapsed().as_secs_f64();
    let restored = restoring
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let (manifest, (core, restored, bytes, took)) = match (loaded?, restored) {
        (Some(m), Some(r)) => (m, r),
        _ => return Ok((new_core()?, None)),
    };
    match restored {
        Ok(()) => {
            SnapshotLoaded {
                bytes,
                generation: manifest.generation,
                taken_at_ms: manifest.taken_at_ms,
                positions: &manifest.positions,
                read_seconds,
                restore_seconds: took.as_secs_f64(),
            }
            .emit(s.health);
            Ok((core, Some(manifest)))
        }
        Err(e) => {
            warn!(owner, error = %e, "snapshot not usable; replaying all input instead");
            Ok((new_core()?, None))
        }
    }
}

/// How many snapshots are restored at once. A restore is bound by the CPU and by memory (a
/// deals core's takes two threads, one decoding while the other inserts), so restores side by
/// side beyond the machine's pairs of cores only take turns at a finer grain, each with its
/// share of a state not yet in the cache.
fn restore_turns() -> &'static tokio::sync::Semaphore {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new((cores / 2).max(1))
    })
}

/// The consumer group that divides the slots among a service's instances.
fn slots_group(s: &Shared<'_>) -> String {
    format!("{}-{}-slots", s.svc.group_id, s.service)
}

/// Joins the slots group with a fresh member; called again when an assignment never comes.
fn join_slots(s: &Shared<'_>, ownership: Ownership) -> Result<BaseConsumer<SlotsContext>, Error> {
    crate::coordination::ownership::join(
        s.settings,
        &slots_group(s),
        SlotsContext {
            ownership,
            board: s.board.clone(),
            health: s.health.clone(),
        },
        None,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The topic readers block in place while they measure an end: work on a thread of its
    /// own may do so, and its result or its panic comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_on_its_own_thread_may_block_in_place() {
        let got = on_own_thread("test", async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(tokio::task::block_in_place(|| 7))
        })
        .await;
        assert_eq!(got.ok(), Some(7));
        let panicked: Result<(), Error> = on_own_thread("test", async { panic!("gone") }).await;
        assert!(panicked.is_err());
    }
}
