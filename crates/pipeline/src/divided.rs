//! Divided ingest (`divide_input = true`): the instances of a service in one consumer group
//! each consume only the partitions Kafka assigns them, of two topics:
//!
//! - the input (`sales.deals`, `sales.activities`): one aggregation core per input partition
//!   holds that partition's records and sends what each of its (rep, team) cells adds up to —
//!   a contribution — to the cells topic;
//! - the cells topic (`salespulse.cells.v{layout}.<group_id>.<service>`, layout
//!   `salespulse_aggregate::PART_LAYOUT`, compacted, one partition per slot): a merger sums
//!   the contributions of the assigned slots and builds the series of the subjects those
//!   slots own (`salespulse_aggregate::slot_of`), for `/metrics` and `sales.metrics`; slot 0
//!   gets each source's teams' summaries rather than its cells, for the org and regions.
//!
//! Every tick commits, in one transaction under the group's metadata, the contributions,
//! series, dead letters and celebrations produced since the last one with the offsets of both
//! topics past the records behind them. A revocation first commits a last tick under the
//! generation still current, so that what the state holds is what the group's offsets say. An
//! assignment then rebuilds the instance from the topics, keeping what stayed its own and did not
//! move on meanwhile: each other input partition replayed up to the group's committed offset
//! without outputs, each other slot's contributions read whole, and the metrics topic read back
//! so that only what differs is published.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use salespulse_aggregate::{Contribution, Differ, Merger, Subject};
use salespulse_decode::{Format, RosterEvent};
use salespulse_expose::{Board, Health};
use tracing::{info, warn};

use crate::config::Settings;
use crate::coordination::ownership::Member;
use crate::events::{
    Announced, Assigned, ConsumerReplaced, InternalEvent, Revoked, TakeOverFailed, TickStage,
    TransactionEnded,
};
use crate::kafka::{client_config, partitions, ReadToEnd, SetDefaults};
use crate::pacer::Pacer;
use crate::run::{now_ms, AbortOnDrop, Shared};
use crate::sink::gate::Gate;
use crate::sink::transaction::{commit_within, transactional_id, Ended, RETRY_FOR};
use crate::sink::{create_producer, settle, Outputs};
use crate::source::follow::{Ahead, Announced as AnnouncedKeys, Followed};
use crate::source::offsets::GroupOffsets;
use crate::source::roster::Roster;
use crate::source::watch::{position_in, Stalls, STALL_AFTER};
use crate::source::{content_type, read_partitions, InputContext, TopicCounters, LARGE_FETCHES};
use crate::state::processor::Processor;
use crate::state::snapshot::Manifest;
use crate::Error;

/// Records handled per wake-up of the loop before it looks at the clock again.
const MAX_BATCH: usize = 2048;

/// How long a revocation's commit retries a transaction coordinator that is away.
const HAND_BACK_RETRY_FOR: Duration = Duration::from_secs(5);

/// How often the ends of the input partitions are measured: what paces ticks while behind.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Segment age of the cells topic. Every rebuild reads its assigned slots' partitions whole,
/// and each rebuild adds every cell its sources hold (and withdraws each from the slots it does
/// not go to): rolled every minute, the cleaner keeps it near its latest values, where an
/// hour's segment would hold every rebuild and tick of that hour.
pub(crate) const CELLS_SEGMENT_MS: u64 = 60_000;

/// The compacted topic of a service's cells, in the parts' layout of this build.
pub(crate) fn cells_topic(group_id: &str, service: &str) -> String {
    let layout = salespulse_aggregate::PART_LAYOUT;
    format!("salespulse.cells.v{layout}.{group_id}.{service}")
}

/// The consumer group of a service's instances in divided ingest.
/// The owner of an input partition's snapshots (see `crate::state::snapshot`): its positions
/// are those of the group in one partition of the service's input.
fn snapshot_owner(group_id: &str, service: &str, partition: i32) -> String {
    format!("{group_id}/{service}.p{partition}")
}

fn group_of(group_id: &str, service: &str) -> String {
    format!("{group_id}-{service}-divided")
}

/// The partitions the group has assigned this instance, as the rebalance callbacks leave them.
#[derive(Debug, Default)]
struct Share {
    input: BTreeSet<i32>,
    cells: BTreeSet<i32>,
    /// The group's metadata as of the assignment: transactions commit under it, so that the
    /// broker refuses them once the group has moved on.
    member: Option<Member>,
    /// Bumped at every revocation and assignment.
    generation: u64,
    /// Partitions are assigned (none may be): not between a revocation and the next
    /// assignment, nor before the first.
    assigned: bool,
    /// The instance started over with a consumer of its own: this one's callbacks, as it
    /// closes, must not clear the board the next instance serves.
    retired: bool,
    /// The group asked for the partitions back and waits until the loop gives them up (see
    /// [`Instance::hand_back`]).
    revoking: bool,
}

/// The share as the callbacks leave it, and the loop's wake-up when the group asks for it back
/// or hands a new one out.
#[derive(Debug, Clone, Default)]
struct Assignment(Arc<Mutex<Share>>, Arc<tokio::sync::Notify>);

impl Assignment {
    fn current(&self) -> (BTreeSet<i32>, BTreeSet<i32>, Option<Member>, u64) {
        self.0
            .lock()
            .map(|s| {
                (
                    s.input.clone(),
                    s.cells.clone(),
                    s.member.clone(),
                    s.generation,
                )
            })
            .unwrap_or_default()
    }

    /// Leaves the board to the instance that starts over after this one, and gives up the
    /// partitions the group asked for, if it did: a consumer closes only once they are.
    fn retire(&self, consumer: &TasksConsumer) {
        let revoking = self
            .0
            .lock()
            .map(|mut s| {
                s.retired = true;
                std::mem::take(&mut s.revoking)
            })
            .unwrap_or_default();
        if revoking {
            let _ = consumer.unassign();
        }
    }

    /// Whether the group asks for the partitions back; the loop answers once.
    fn take_revoking(&self) -> bool {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut s.revoking))
            .unwrap_or_default()
    }

    /// The partitions given up (`handed_back` as in [`Revoked`]): nothing exported may
    /// outlive them.
    fn revoked(&self, board: &Board, health: &Health, handed_back: (bool, f64)) {
        let Ok(mut s) = self.0.lock() else {
            return;
        };
        board.clear();
        *s = Share {
            generation: s.generation + 1,
            ..Share::default()
        };
        drop(s);
        Revoked {
            what: "partition",
            handed_back: Some(handed_back),
        }
        .emit(health);
    }

    /// The generation, and whether partitions are assigned.
    fn generation(&self) -> (u64, bool) {
        self.0
            .lock()
            .map(|s| (s.generation, s.assigned))
            .unwrap_or_default()
    }
}

/// The member's callbacks: note what the group asks back and what it hands out.
struct TasksContext {
    assignment: Assignment,
    input: String,
    health: Health,
}

impl ClientContext for TasksContext {
    fn error(&self, error: KafkaError, reason: &str) {
        InputContext.error(error, reason);
    }
}

impl ConsumerContext for TasksContext {
    /// Eager rebalancing with the revocation answered by the loop: librdkafka rejoins the
    /// group only once the partitions are unassigned, so the loop first commits what its
    /// state holds under the generation still current (see [`Instance::hand_back`]). An
    /// assignment is taken at once.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = consumer.assign(tpl) {
                    warn!(error = %e, "taking the assigned partitions failed");
                }
                self.assigned(consumer, tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let answered_here = self
                    .assignment
                    .0
                    .lock()
                    .map(|mut s| {
                        s.revoking = !s.retired;
                        s.retired
                    })
                    .unwrap_or(true);
                if answered_here {
                    let _ = consumer.unassign();
                } else {
                    self.assignment.1.notify_one();
                }
            }
            other => {
                warn!(error = ?other, "rebalancing failed; giving the partitions up");
                let _ = consumer.unassign();
            }
        }
    }
}

impl TasksContext {
    fn assigned(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let (mut input, mut cells) = (BTreeSet::new(), BTreeSet::new());
        for e in tpl.elements() {
            if e.topic() == self.input {
                input.insert(e.partition());
            } else {
                cells.insert(e.partition());
            }
        }
        let Ok(mut s) = self.assignment.0.lock() else {
            return;
        };
        if s.retired {
            return;
        }
        *s = Share {
            input,
            cells,
            member: consumer.group_metadata().map(|m| Member(Arc::new(m))),
            generation: s.generation + 1,
            assigned: true,
            retired: false,
            revoking: false,
        };
        Assigned {
            input: Some(&s.input),
            slots: &s.cells,
        }
        .emit(&self.health);
        drop(s);
        // Built at once rather than at the next tick, up to a stretched interval away.
        self.assignment.1.notify_one();
    }
}

type TasksConsumer = StreamConsumer<TasksContext>;

/// One input partition's core and the next offset it applies.
struct Task<P> {
    core: P,
    next: i64,
    /// The partition's newest snapshot whose transaction committed, and the one written in
    /// the open transaction (an aborted transaction rebuilds every task from the topics).
    saved: Option<Manifest>,
    saving: Option<Manifest>,
    saved_at: Instant,
}

/// State kept across a rebalance: the input partitions' cores, where each slot of the merger
/// was read to, and (once the rebuild has decided what to keep) the merger.
struct Held<P, M = ()> {
    tasks: BTreeMap<i32, Task<P>>,
    cells_next: BTreeMap<i32, i64>,
    merger: M,
}

/// How a rebuild fills its merger: from the cells topic read back (the merger and where
/// each slot was read to, the contributions read), or, on an instance that holds every input
/// partition, from its own cores once they are built (the slots' ends to read on from).
enum Merging {
    Read(AbortOnDrop<Result<(MergerRead, f64), Error>>),
    Own(AbortOnDrop<Result<BTreeMap<i32, i64>, Error>>),
}

type MergerRead = (Merger, BTreeMap<i32, i64>, u64);

/// What a rebuild restored and read, for its log line.
struct Built {
    replayed: u64,
    input_seconds: f64,
    /// Contributions read back from the cells topic, or merged from the instance's own cores
    /// (`cells_read` false: it holds every input partition).
    contributions: u64,
    cells_seconds: f64,
    cells_read: bool,
}

/// Of the partitions `held` (each with the offset its state applies next), those `assigned`
/// again whose committed offset (`input`: of the input topic, else of the cells topic) is that
/// offset: nothing of them was applied anywhere since this instance committed them.
fn unchanged(
    held: impl IntoIterator<Item = (i32, i64)>,
    assigned: &BTreeSet<i32>,
    committed: &HashMap<(bool, i32), i64>,
    input: bool,
) -> BTreeSet<i32> {
    held.into_iter()
        .filter(|(p, next)| assigned.contains(p) && committed.get(&(input, *p)) == Some(next))
        .map(|(p, _)| p)
        .collect()
}

/// The instance: its cores, its merger and what it has exported.
struct Instance<'a, P: Processor> {
    shared: Shared<'a>,
    out: Outputs<'a>,
    cells: String,
    slots: u32,
    /// Reads the group's committed offsets at every rebuild; kept connected, as a new client
    /// first waits for a connection and its group coordinator (about 0.1 s).
    offsets: GroupOffsets<'a>,
    assignment: Assignment,
    /// The generation the state below was built for; `None`: to be built again.
    built: Option<u64>,
    /// The state was committed whole as its partitions were given up (`hand_back`): the
    /// next rebuild keeps what the group's committed offsets show unchanged.
    suspended: bool,
    member: Option<Member>,
    tasks: BTreeMap<i32, Task<P>>,
    merger: Merger,
    /// Per assigned slot, the offset its records are applied from (what the rebuild read).
    cells_next: BTreeMap<i32, i64>,
    differ: Differ,
    roster: BTreeMap<String, RosterEvent>,
    /// Keys of the celebrations announced: read back at a rebuild, from where the last
    /// rebuild's read ended (`announced_to`) when there was one, so that a rebuild does not
    /// read a topic that only grows from its beginning every time.
    announced: HashSet<String>,
    announced_to: BTreeMap<i32, i64>,
    /// Announced in the open transaction: taken out of `announced` again if it is aborted.
    announced_in_txn: Vec<String>,
    counters: TopicCounters,
    roster_counters: TopicCounters,
    /// The offsets committed last (input and cells), to commit only when they move.
    committed: HashMap<(bool, i32), i64>,
    settled_at: Instant,
    /// Measures the ends of the assigned input partitions (`highs`), every [`LAG_EVERY`].
    end_probe: Arc<BaseConsumer>,
    highs: HashMap<i32, i64>,
    /// librdkafka's position in each input partition as last measured: past what it never
    /// hands over (commit markers, records of aborted transactions), where `next` stops.
    read_to: HashMap<i32, i64>,
    lag_checked: Instant,
    /// Input partitions standing still behind their end (see `crate::source::watch`), and
    /// those found so at the last measurement: the instance then starts over.
    stalls: Stalls<i32>,
    stalled: Vec<i32>,
}

/// Runs one instance in divided ingest until `shutdown` resolves or an error stops it.
pub(crate) async fn run_instance<P: Processor>(
    shared: Shared<'_>,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<(), Error> {
    let settings = shared.settings;
    let producer = create_producer(
        settings,
        Some(&transactional_id(&shared.svc.group_id, P::SERVICE)),
    )?;
    tokio::task::block_in_place(|| crate::sink::transaction::init(&producer))?;
    let assignment = Assignment::default();
    let consumer = tokio::task::block_in_place(|| join::<P>(&shared, assignment.clone()))?;
    let mut roster =
        tokio::task::block_in_place(|| Roster::connect(settings, &shared.svc.group_id))?;
    let mut me = Instance::<P>::new(shared, &producer, assignment, &consumer)?;
    me.read_roster(&mut roster).await?;
    let mut pacer = Pacer::of(&settings.publish);
    let next_tick = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(next_tick);
    let share_changed = me.assignment.1.clone();
    let ran: Result<(), Error> = async {
        loop {
            tokio::select! {
                biased;
                _ = &mut *shutdown => {
                    info!("shutting down: committing what is done");
                    return Ok(());
                }
                _ = share_changed.notified() => {
                    me.hand_back(&consumer).await?;
                    if me.awaits_rebuild() {
                        next_tick.as_mut().reset(tokio::time::Instant::now());
                    }
                }
                _ = &mut next_tick => {
                    let interval = me.tick(&consumer, &mut roster, &mut pacer).await?;
                    next_tick.as_mut().reset(tokio::time::Instant::now() + interval);
                }
                m = roster.consumer.recv() => match m {
                    Ok(m) => me.on_roster(&m),
                    Err(e) => warn!(error = %e, "roster consumer error"),
                },
                m = consumer.recv() => {
                    let began = Instant::now();
                    if let Err(e) = me.on_records(&consumer, m).await {
                        me.produce_failed(e)?;
                    }
                    pacer.worked(began.elapsed());
                    // A backlog worked off: the board is brought up to date now, not at the end
                    // of an interval stretched for the backlog.
                    if pacer.stretched() && me.caught_up() {
                        next_tick.as_mut().reset(tokio::time::Instant::now());
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = ran {
        // Not ready from here on, whatever the closing of the consumers takes.
        me.give_up_state();
        me.assignment.retire(&consumer);
        drop(me);
        crate::kafka::close_aside("the group's consumers", (consumer, roster));
        return Err(e);
    }
    if me.built.is_some() {
        me.on_tick(&consumer, true).await?;
    }
    me.assignment.retire(&consumer);
    info!("stopped cleanly");
    Ok(())
}

/// Joins the group on the input and cells topics.
fn join<P: Processor>(s: &Shared<'_>, assignment: Assignment) -> Result<TasksConsumer, Error> {
    let mut c = client_config(s.settings);
    c.set("group.id", group_of(&s.svc.group_id, P::SERVICE))
        // Eager: every member gives its partitions up before any is handed out again.
        .set("partition.assignment.strategy", "roundrobin")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set_defaults(LARGE_FETCHES)
        .set_defaults([
            ("session.timeout.ms", "10000"),
            ("max.poll.interval.ms", "30000"),
        ]);
    let consumer: TasksConsumer = c
        .create_with_context(TasksContext {
            assignment,
            input: s.input.to_owned(),
            health: s.health.clone(),
        })
        .map_err(|e| Error::kafka("creating the input consumer", e))?;
    let cells = cells_topic(&s.svc.group_id, P::SERVICE);
    // Both topics known to the consumer before it joins: a topic another instance has just
    // created may not be in a broker's metadata yet, and a group whose leader does not know
    // it assigns none of its partitions until the next metadata refresh, minutes later.
    for topic in [s.input, &cells] {
        partitions(&consumer, topic)?;
    }
    consumer
        .subscribe(&[s.input, &cells])
        .map_err(|e| Error::kafka("joining the group", e))?;
    Ok(consumer)
}

impl<'a, P: Processor> Instance<'a, P> {
    fn new(
        shared: Shared<'a>,
        producer: &'a FutureProducer,
        assignment: Assignment,
        consumer: &TasksConsumer,
    ) -> Result<Self, Error> {
        let cells = cells_topic(&shared.svc.group_id, P::SERVICE);
        let slots = u32::try_from(partitions(consumer, &cells)?.len())
            .unwrap_or(1)
            .max(1);
        let merger = P::merger(
            shared.contract,
            shared.settings.calendar()?,
            now_ms(),
            slots,
        );
        Ok(Instance {
            out: Outputs::new(
                producer,
                shared.health,
                &shared.settings.topics.deadletter,
                P::SERVICE,
            ),
            counters: TopicCounters::new(shared.health, shared.input),
            roster_counters: TopicCounters::new(shared.health, &shared.settings.topics.roster),
            offsets: GroupOffsets::new(
                shared.settings,
                &group_of(&shared.svc.group_id, P::SERVICE),
            )?,
            cells,
            slots,
            assignment,
            built: None,
            suspended: false,
            member: None,
            tasks: BTreeMap::new(),
            merger,
            cells_next: BTreeMap::new(),
            differ: Differ::default(),
            roster: BTreeMap::new(),
            announced: HashSet::new(),
            announced_to: BTreeMap::new(),
            announced_in_txn: Vec::new(),
            committed: HashMap::new(),
            settled_at: Instant::now(),
            end_probe: Arc::new(crate::source::end_probe(shared.settings)?),
            highs: HashMap::new(),
            read_to: HashMap::new(),
            lag_checked: Instant::now(),
            stalls: Stalls::new(STALL_AFTER),
            stalled: Vec::new(),
            shared,
        })
    }

    /// Reads the roster to its end, before any input.
    async fn read_roster(&mut self, roster: &mut Roster) -> Result<(), Error> {
        let end = std::mem::take(&mut roster.end);
        let topic = &self.shared.settings.topics.roster;
        let mut reader = ReadToEnd::new(&roster.consumer, topic, end, HashMap::new());
        while let Some(m) = reader.next().await? {
            self.on_roster(&m);
        }
        Ok(())
    }

    /// A tick of the loop, then the watch on both consumers. Returns how long until the next
    /// tick, or [`Error::Stalled`] when an input partition stood still: the group's consumer
    /// is not replaced in place as an assigned one is, the instance starts over and a new
    /// member of the group takes the partitions on.
    async fn tick(
        &mut self,
        consumer: &TasksConsumer,
        roster: &mut Roster,
        pacer: &mut Pacer,
    ) -> Result<Duration, Error> {
        let began = Instant::now();
        if let Err(e) = self.on_tick(consumer, false).await {
            self.produce_failed(e)?;
        }
        pacer.record(began.elapsed(), self.behind());
        let interval = pacer.interval();
        let (settings, health) = (self.shared.settings, self.shared.health);
        health.tick_interval.set(interval.as_secs_f64());
        if let Err(e) = tokio::task::block_in_place(|| roster.watch(settings, health)) {
            warn!(error = %e, "could not replace the roster consumer; trying again later");
        }
        let stalled: Vec<(String, i32)> = std::mem::take(&mut self.stalled)
            .into_iter()
            .map(|p| (self.shared.input.to_owned(), p))
            .collect();
        if !stalled.is_empty() {
            ConsumerReplaced {
                consumer: "group",
                what: "the group's input consumer (the instance starts over)",
                partitions: &stalled,
                stalled_for: STALL_AFTER,
            }
            .emit(health);
            return Err(Error::Stalled(format!("input partitions {stalled:?}")));
        }
        Ok(interval)
    }

    /// An empty core for one input partition, noting the cells it will hold: what the run
    /// before sent for them is not known (see `Processor::begin_recovery`).
    fn recovering_core(&self) -> Result<P, Error> {
        let s = &self.shared;
        let mut core = P::new(s.contract, s.settings.calendar()?, now_ms());
        core.configure_regions(&s.settings.regions.team_list());
        if P::CELEBRATES {
            core.enable_celebrations(&s.settings.alerts);
        }
        core.exchange(self.slots);
        core.begin_recovery();
        Ok(core)
    }

    fn new_merger(&self, owned: &BTreeSet<i32>) -> Result<Merger, Error> {
        let s = &self.shared;
        let mut m = P::merger(s.contract, s.settings.calendar()?, now_ms(), self.slots);
        m.configure_regions(&s.settings.regions.team_list());
        m.set_owned(owned.iter().map(|s| *s as u32).collect());
        for ev in self.roster.values() {
            m.roster(ev);
        }
        Ok(m)
    }

    fn on_roster(&mut self, m: &BorrowedMessage<'_>) {
        self.roster_counters.observe(m);
        let s = &self.shared;
        let format = Format::from_content_type(content_type(m));
        match format.and_then(|f| s.contract.decode_roster(m.key(), m.payload(), f)) {
            Ok(ev) => {
                for t in self.tasks.values_mut() {
                    t.core.roster(&ev);
                }
                self.merger.roster(&ev);
                self.roster.insert(ev.rep_id().to_owned(), ev);
            }
            Err(error) => crate::events::RosterRecordRejected {
                source: crate::events::Source {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                },
                error: &error,
            }
            .emit(s.health),
        }
    }

    /// Handles a record and what is already fetched after it.
    async fn on_records(
        &mut self,
        consumer: &TasksConsumer,
        first: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), Error> {
        use futures_util::FutureExt;
        let now = now_ms();
        // Records of another assignment than the state's are read again by the rebuild that
        // comes next (the input partitions are sought back to the committed offsets).
        let current = self.built == Some(self.assignment.generation().0);
        let mut m = Some(first);
        let mut batch = 0;
        while let Some(r) = m.take() {
            match r {
                Ok(_) if !current => {}
                Ok(m) if m.topic() == self.shared.input => self.on_input(&m, now).await?,
                Ok(m) => self.on_cells(&m),
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => warn!(error = %e, "input consumer error"),
            }
            batch += 1;
            if batch < MAX_BATCH {
                m = consumer.recv().now_or_never();
            }
        }
        Ok(())
    }

    async fn on_input(&mut self, m: &BorrowedMessage<'_>, now: i64) -> Result<(), Error> {
        let contract = self.shared.contract;
        let Some(task) = self.tasks.get_mut(&m.partition()) else {
            return Ok(());
        };
        if m.offset() < task.next {
            return Ok(());
        }
        task.next = m.offset() + 1;
        let res = Format::from_content_type(content_type(m)).and_then(|f| {
            task.core
                .handle(contract, m.key(), m.payload().unwrap_or_default(), f, now)
        });
        match res {
            Ok(outcome) => {
                self.counters.count(m, outcome);
                Ok(())
            }
            Err(e) => {
                self.counters.observe(m);
                self.out.dead_letter(m, &e).await
            }
        }
    }

    fn on_cells(&mut self, m: &BorrowedMessage<'_>) {
        let s = m.partition();
        let Some(next) = self.cells_next.get_mut(&s) else {
            return;
        };
        if m.offset() < *next {
            return;
        }
        *next = m.offset() + 1;
        apply_cell(&mut self.merger, m);
    }

    /// One tick: rebuild after a rebalance, then move the clocks, send the cores' cells,
    /// snapshot the cores that are due (every one when `closing`), export the merger's
    /// changes and commit.
    async fn on_tick(&mut self, consumer: &TasksConsumer, closing: bool) -> Result<(), Error> {
        let (generation, assigned) = self.assignment.generation();
        if self.built != Some(generation) {
            if !assigned {
                return self.give_up();
            }
            match self.rebuild(consumer).await {
                Err(e @ (Error::Fenced(_) | Error::Wedged(_))) => return Err(e),
                // As a take-over in the default mode: a rebuild that the cluster interrupts
                // (a read that timed out waiting for a broker's partitions or for a killed
                // instance's transaction) is done again at the next tick, from the topics.
                Err(error) => {
                    TakeOverFailed { error: &error }.emit(self.shared.health);
                    return self.abandon();
                }
                Ok(()) => {}
            }
            if self.built.is_none() {
                return Ok(());
            }
        }
        self.advance(closing, RETRY_FOR).await?;
        self.measure_lag(consumer);
        self.report();
        Ok(())
    }

    /// The tick's work on a built state up to its commit (its calls retried for up to
    /// `retry_for`): see [`Instance::on_tick`].
    async fn advance(&mut self, closing: bool, retry_for: Duration) -> Result<(), Error> {
        let now = now_ms();
        let began = Instant::now();
        let mut clock = Duration::ZERO;
        for (p, task) in &mut self.tasks {
            let ticked = Instant::now();
            task.core.tick(now);
            clock += ticked.elapsed();
            for c in task.core.drain_contributions() {
                let key = cell_key(*p as u32, &c);
                let mut rec = FutureRecord::to(&self.cells)
                    .partition(c.slot as i32)
                    .key(&key);
                if let Some(v) = &c.value {
                    rec = rec.payload(v.as_slice());
                }
                self.out.enqueue(rec).await?;
            }
            if P::CELEBRATES {
                let topic = &self.shared.settings.topics.celebrations;
                for c in task.core.take_celebrations() {
                    // A celebration is announced once per key, as in the default mode: a deal
                    // won again after a reopening is not celebrated again.
                    if !self.announced.insert(c.key.clone()) {
                        continue;
                    }
                    self.announced_in_txn.push(c.key.clone());
                    Announced {
                        topic,
                        key: &c.key,
                        kind: c.kind,
                    }
                    .emit(self.shared.health);
                    let rec = FutureRecord::to(topic)
                        .key(c.key.as_bytes())
                        .payload(&c.value);
                    self.out.enqueue(rec).await?;
                }
            }
        }
        let ticked = Instant::now();
        self.merger.tick(now);
        clock += ticked.elapsed();
        let changes = self.differ.diff(self.merger.drain_changes());
        self.shared.board.apply(&changes);
        let t = &self.shared.settings.topics;
        self.out
            .publish(&t.metrics, &changes, self.shared.settings.publish.format)
            .await?;
        self.counters.flush();
        let health = self.shared.health;
        TickStage {
            stage: "clock",
            took: clock,
        }
        .emit(health);
        TickStage {
            stage: "export",
            took: began.elapsed().saturating_sub(clock),
        }
        .emit(health);
        self.commit(retry_for).await?;
        // Snapshots in a transaction of their own, as in the default mode (see
        // `Instance::snapshot_and_commit` in `crate::run`): their encoding and writing do not
        // count against the tick's transaction timeout. None after a refused commit.
        if self.built.is_some() && self.write_snapshots(closing).await? {
            self.commit(retry_for).await?;
        }
        Ok(())
    }

    /// The ends of the assigned input partitions and how far behind them each core is; a
    /// round trip per partition, so at most every [`LAG_EVERY`] — but at every tick while
    /// behind, so that reaching the ends measured means the backlog is worked off.
    fn measure_lag(&mut self, consumer: &TasksConsumer) {
        if !self.behind() && self.lag_checked.elapsed() < LAG_EVERY {
            return;
        }
        self.lag_checked = Instant::now();
        let input = self.shared.input;
        // The consumer's positions move past the commit markers it never hands over; a
        // partition's applied offset does not.
        let read = consumer.position().ok();
        let mut measured = Vec::with_capacity(self.tasks.len());
        for (p, t) in &self.tasks {
            let ends = tokio::task::block_in_place(|| {
                self.end_probe
                    .fetch_watermarks(input, *p, Duration::from_secs(2))
            });
            if let Ok((_, high)) = ends {
                self.highs.insert(*p, high);
                let at = position_in(read.as_ref(), input, *p, t.next);
                self.read_to.insert(*p, at);
                let lag = (high - at).max(0);
                let partition = p.to_string();
                let gauge = self
                    .shared
                    .health
                    .lag
                    .with_label_values(&[input, &partition]);
                gauge.set(lag);
                measured.push((*p, at, high));
            }
        }
        self.stalled = self.stalls.check(Instant::now(), measured);
    }

    /// Whether an input partition is further behind than readiness allows, as last measured:
    /// while it is, ticks are spaced out (see `crate::pacer`).
    fn behind(&self) -> bool {
        let max = self.shared.svc.ready_max_lag;
        self.tasks.iter().any(|(p, t)| {
            self.highs
                .get(p)
                .is_some_and(|h| h - self.read_to(*p, t) > max)
        })
    }

    /// Whether every input partition was read to the end last measured.
    fn caught_up(&self) -> bool {
        self.tasks
            .iter()
            .all(|(p, t)| self.highs.get(p).is_none_or(|h| self.read_to(*p, t) >= *h))
    }

    /// How far input partition `p` is read: its next record to apply, or past it where
    /// librdkafka's position was measured further.
    fn read_to(&self, p: i32, t: &Task<P>) -> i64 {
        self.read_to.get(&p).map_or(t.next, |r| (*r).max(t.next))
    }

    /// Writes, in the open transaction, the snapshot of every core that is due: its state as
    /// of the records before `next`, whose contributions were committed just before. A task
    /// handed over later restores it and replays only the records after it. Whether any was
    /// written.
    async fn write_snapshots(&mut self, closing: bool) -> Result<bool, Error> {
        let every = self.shared.svc.snapshot_interval_seconds;
        if every == 0 {
            return Ok(false);
        }
        let every = Duration::from_secs(every);
        let s = &self.shared;
        let mut written = Vec::new();
        for (p, t) in &mut self.tasks {
            let previous = t.saving.as_ref().or(t.saved.as_ref());
            // The clock alone changes nothing a restore would not derive again.
            let unchanged = previous.and_then(|m| m.positions.get(p)) == Some(&t.next);
            if unchanged || (!closing && t.saved_at.elapsed() < every) {
                continue;
            }
            let took = Instant::now();
            let state = t.core.save();
            let m = crate::state::snapshot::save(
                self.out.producer,
                s.settings,
                s.health,
                &snapshot_owner(&s.svc.group_id, P::SERVICE, *p),
                (&state, took),
                BTreeMap::from([(*p, t.next)]),
                previous,
            )
            .await?;
            t.saving = Some(m);
            t.saved_at = Instant::now();
            written.push(*p);
        }
        if written.len() > 1 {
            let manifests: Vec<_> = written
                .iter()
                .filter_map(|p| {
                    let m = self.tasks.get(p)?.saving.as_ref()?;
                    Some((snapshot_owner(&s.svc.group_id, P::SERVICE, *p), m))
                })
                .collect();
            crate::state::snapshot::write_manifests(self.out.producer, s.settings, &manifests)
                .await?;
        }
        Ok(!written.is_empty())
    }

    /// The group asks for the partitions back (eager protocol: all of them, at every
    /// rebalance). Before they are given up, a tick commits everything the state holds under
    /// the generation still current, as Kafka Streams commits its tasks when they are revoked:
    /// the state then is what the group's committed offsets say, and the partitions assigned
    /// again keep it instead of being rebuilt from the topics. A commit that fails leaves
    /// nothing kept, as before.
    async fn hand_back(&mut self, consumer: &TasksConsumer) -> Result<(), Error> {
        if !self.assignment.take_revoking() {
            return Ok(());
        }
        let asked = Instant::now();
        let (generation, _) = self.assignment.generation();
        let mut fatal = None;
        if self.built == Some(generation) {
            // The group waits for this member meanwhile: a coordinator away for longer costs
            // the state, not the group's rebalance.
            if let Err(e) = self.advance(false, HAND_BACK_RETRY_FOR).await {
                fatal = self.produce_failed(e).err();
            }
        }
        // A refused commit has set `built` aside.
        let committed = fatal.is_none() && self.built == Some(generation);
        let handed_back = (committed, asked.elapsed().as_secs_f64());
        self.assignment
            .revoked(&self.shared.board, self.shared.health, handed_back);
        // Given up whatever happened, or the group would wait for this member.
        if let Err(e) = consumer.unassign() {
            warn!(error = %e, "giving the partitions up failed");
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        if committed {
            self.shared.ready.store(false, Ordering::Relaxed);
            self.built = None;
            self.member = None;
            self.suspended = true;
            Ok(())
        } else {
            self.give_up()
        }
    }

    /// Whether partitions are assigned that the state is not built for.
    fn awaits_rebuild(&self) -> bool {
        let (generation, assigned) = self.assignment.generation();
        assigned && self.built != Some(generation)
    }

    /// Between a revocation and the next assignment: what was produced for the partitions
    /// given up is aborted, and nothing is exported.
    fn give_up(&mut self) -> Result<(), Error> {
        if self.built.is_some() {
            self.abandon()?;
        }
        Ok(())
    }

    /// Forgets the state held and aborts what the open transaction holds.
    fn abandon(&mut self) -> Result<(), Error> {
        let held = self.built.is_some();
        self.give_up_state();
        self.abort_given_up(held)
    }

    /// Aborts the open transaction: what it holds was produced for an assignment this
    /// instance no longer has. Counted and logged as an abort when state was `held` for it.
    fn abort_given_up(&mut self, held: bool) -> Result<(), Error> {
        tokio::task::block_in_place(|| crate::sink::transaction::abort(self.out.producer))?;
        let _ = self.out.take_pending();
        self.unannounce_aborted();
        if held {
            TransactionEnded {
                outcome: "aborted",
                why: Some("the partitions were given up"),
            }
            .emit(self.shared.health);
        }
        Ok(())
    }

    /// Forgets the partitions and slots held, first of all by no longer being ready: a failed
    /// abort after this leaves an instance that serves nothing.
    fn give_up_state(&mut self) {
        self.shared.ready.store(false, Ordering::Relaxed);
        self.shared.board.clear();
        self.built = None;
        self.suspended = false;
        self.tasks.clear();
        self.cells_next.clear();
        self.member = None;
    }

    /// Builds the instance again from the topics for the current assignment.
    async fn rebuild(&mut self, consumer: &TasksConsumer) -> Result<(), Error> {
        let began = Instant::now();
        let held = self.set_aside()?;
        let (input, slots, member, generation) = self.assignment.current();
        let committed = self.read_committed(&input, &slots)?;
        let committed_s = began.elapsed().as_secs_f64();
        let kept = self.keep(held, &input, &slots, &committed)?;
        let (kept_input, kept_slots) = (kept.tasks.len(), kept.cells_next.len());
        let filling = Gate::open();
        let _stop_filling = filling.closed_on_drop();
        // Taken out for the read; a rebuild that fails reads the topic whole next time.
        let announced = P::CELEBRATES.then(|| {
            Followed::resumed(
                &self.shared.settings.topics.celebrations,
                AnnouncedKeys(std::mem::take(&mut self.announced)),
                std::mem::take(&mut self.announced_to),
            )
        });
        let reads = self.read_back(&slots, filling, began, announced);
        let built = self.build_state(kept, &input, &slots, &committed).await?;
        if !self.seek_to_state(consumer)? {
            warn!("seeking the assigned partitions failed; building again at the next tick");
            return Ok(());
        }
        let step = Instant::now();
        let (Ahead { board, announced }, shown, serving_s) = reads.await?;
        let (served, metrics_records) = (shown.series(), board.kept.records);
        // The deals of the assigned partitions that were celebrated are not celebrated again.
        if let Some((AnnouncedKeys(keys), at)) = announced.map(Followed::into_parts) {
            self.announced = keys;
            self.announced_to = at;
        }
        self.differ = board.kept.into_differ();
        self.take_over(&slots, shown).await?;
        let board_seconds = step.elapsed().as_secs_f64();
        self.member = member;
        self.built = Some(generation);
        self.shared.ready.store(true, Ordering::Relaxed);
        let h = self.shared.health;
        h.owned_slots.set(slots.len() as i64);
        h.restore_replayed.set(built.replayed as i64);
        h.restore_seconds.set(began.elapsed().as_secs_f64());
        info!(
            input = ?input,
            slots = ?slots,
            kept_input,
            kept_slots,
            replayed = built.replayed,
            contributions = built.contributions,
            series = self.shared.board.len(),
            served,
            committed_s,
            serving_s,
            metrics_records,
            input_seconds = built.input_seconds,
            cells_seconds = built.cells_seconds,
            cells_read = built.cells_read,
            board_seconds,
            seconds = began.elapsed().as_secs_f64(),
            "built from the topics"
        );
        Ok(())
    }

    /// Sets the state aside for a rebuild: aborts what the open transaction holds and
    /// forgets everything, but what a revocation committed (`hand_back`), which is handed back.
    fn set_aside(&mut self) -> Result<Option<Held<P>>, Error> {
        // Nothing produced for the assignment before may become visible.
        self.abort_given_up(self.built.is_some())?;
        self.shared.ready.store(false, Ordering::Relaxed);
        self.shared.board.clear();
        self.built = None;
        let held = std::mem::take(&mut self.suspended).then(|| Held {
            tasks: std::mem::take(&mut self.tasks),
            cells_next: std::mem::take(&mut self.cells_next),
            merger: (),
        });
        self.tasks.clear();
        self.cells_next.clear();
        self.committed.clear();
        self.highs.clear();
        self.read_to.clear();
        // A rebuild stands the loop still: positions from before it say nothing.
        self.stalls = Stalls::new(STALL_AFTER);
        self.shared.health.lag.reset();
        Ok(held)
    }

    /// The cores of the assigned input partitions (those `kept`, the others restored) and the
    /// merger of the assigned slots (`kept`'s, with the slots it did not hold read whole).
    async fn build_state(
        &mut self,
        kept: Held<P, Merger>,
        input: &BTreeSet<i32>,
        slots: &BTreeSet<i32>,
        committed: &HashMap<(bool, i32), i64>,
    ) -> Result<Built, Error> {
        // An instance that holds every input partition is every source: what its slots merge
        // is what its own cores add up to, once they are built, and the topic need not be
        // read back. Otherwise the cells topic is read back while the input partitions are
        // restored: the two are independent. It is read in a task of its own, on a worker
        // thread, rather than beside the restore in this one, which also hands every snapshot
        // chunk on as it arrives.
        let merging = if self.holds_every_source(input)? {
            // Where to read the slots on from, asked while the partitions are restored.
            let (probe, topic) = (self.end_probe.clone(), self.cells.clone());
            let slots = slots.clone();
            Merging::Own(AbortOnDrop(tokio::task::spawn_blocking(move || {
                slot_ends(&probe, &topic, &slots)
            })))
        } else {
            let merger = kept.merger;
            let (settings, topic) = (self.shared.settings.clone(), self.cells.clone());
            let to_read: BTreeSet<i32> = slots
                .iter()
                .filter(|s| !kept.cells_next.contains_key(s))
                .copied()
                .collect();
            Merging::Read(AbortOnDrop(tokio::spawn(async move {
                timed(read_cells(&settings, &topic, &to_read, merger)).await
            })))
        };
        let to_restore: BTreeSet<i32> = input
            .iter()
            .filter(|p| !kept.tasks.contains_key(p))
            .copied()
            .collect();
        let (replayed, input_seconds) = timed(self.replay_input(&to_restore, committed)).await?;
        self.tasks.extend(kept.tasks);
        let ((merger, ends, contributions), cells_seconds, cells_read) = match merging {
            Merging::Read(cells) => {
                let ((merger, mut ends, contributions), seconds) = cells.join().await?;
                ends.extend(kept.cells_next);
                ((merger, ends, contributions), seconds, true)
            }
            Merging::Own(ends) => {
                let ends = ends.join().await?;
                let took = Instant::now();
                let (merger, contributions) = self.merge_own(slots)?;
                (
                    (merger, ends, contributions),
                    took.elapsed().as_secs_f64(),
                    false,
                )
            }
        };
        // Records the consumer delivers below these were read here.
        self.cells_next = ends;
        self.merger = merger;
        Ok(Built {
            replayed,
            input_seconds,
            contributions,
            cells_seconds,
            cells_read,
        })
    }

    /// Whether `input` is every partition of the input topic.
    fn holds_every_source(&self, input: &BTreeSet<i32>) -> Result<bool, Error> {
        let all = tokio::task::block_in_place(|| {
            crate::kafka::partitions(&*self.end_probe, self.shared.input)
        })?;
        Ok(all.iter().all(|p| input.contains(p)))
    }

    /// A merger of `slots` filled from this instance's cores, which are every source, and how
    /// many contributions it merged. What the cells topic holds below the slots' ends (see
    /// [`slot_ends`]) is what sources sent before; each core's next drain replaces it with
    /// what the merger holds now (a restored core sends every cell and withdraws it
    /// elsewhere; a kept one sent what it holds before the rebalance).
    fn merge_own(&mut self, slots: &BTreeSet<i32>) -> Result<(Merger, u64), Error> {
        let mut merger = self.new_merger(slots)?;
        let mut merged = 0u64;
        for (p, task) in &mut self.tasks {
            for c in task.core.all_contributions() {
                if !slots.contains(&(c.slot as i32)) {
                    continue;
                }
                if let Err(e) = merger.apply(&c, *p as u32) {
                    warn!(error = %e, partition = p, "an own contribution does not merge");
                }
                merged += 1;
            }
        }
        Ok((merger, merged))
    }

    /// Moves the consumer to where each input partition was replayed to and each slot read
    /// to, or kept at: what it handed over since the assignment was passed by, the state not
    /// being built. Whether every partition moved.
    fn seek_to_state(&self, consumer: &TasksConsumer) -> Result<bool, Error> {
        let mut seek = TopicPartitionList::new();
        let cells_next = self
            .cells_next
            .iter()
            .map(|(s, n)| (self.cells.as_str(), s, n));
        let next = self
            .tasks
            .iter()
            .map(|(p, t)| (self.shared.input, p, &t.next));
        for (topic, p, at) in next.chain(cells_next) {
            seek.add_partition_offset(topic, *p, Offset::Offset(*at))
                .map_err(|e| Error::kafka("seeking", e))?;
        }
        Ok(seek_all(consumer, seek))
    }

    /// What of the state `held` since the partitions were handed back the rebuild keeps: each
    /// input partition assigned again whose committed offset is where its core stands, and the
    /// merger with the parts of the slots of which the same holds; it forgets the others'
    /// (given up, or moved on meanwhile). The slots kept are those it need not read again.
    fn keep(
        &mut self,
        held: Option<Held<P>>,
        input: &BTreeSet<i32>,
        slots: &BTreeSet<i32>,
        committed: &HashMap<(bool, i32), i64>,
    ) -> Result<Held<P, Merger>, Error> {
        let Some(Held {
            mut tasks,
            mut cells_next,
            ..
        }) = held
        else {
            return Ok(Held {
                tasks: BTreeMap::new(),
                cells_next: BTreeMap::new(),
                merger: self.new_merger(slots)?,
            });
        };
        let same = unchanged(
            tasks.iter().map(|(p, t)| (*p, t.next)),
            input,
            committed,
            true,
        );
        tasks.retain(|p, _| same.contains(p));
        let same = unchanged(
            cells_next.iter().map(|(s, n)| (*s, *n)),
            slots,
            committed,
            false,
        );
        cells_next.retain(|s, _| same.contains(s));
        let empty = self.new_merger(&BTreeSet::new())?;
        let mut merger = std::mem::replace(&mut self.merger, empty);
        merger.keep_slots(&same.iter().map(|s| *s as u32).collect::<Vec<_>>());
        merger.set_owned(slots.iter().map(|s| *s as u32).collect());
        Ok(Held {
            tasks,
            cells_next,
            merger,
        })
    }

    /// The metrics and celebrations topics, read while the partitions' state is rebuilt: what
    /// previous owners wrote there is settled, as their offsets are. As soon as the metrics
    /// topic is read, the board serves the owned slots' series from it (through `filling`),
    /// the numbers of the last commit, rather than nothing until the state is built. The read
    /// has a thread of its own, so that the restore and the cells read, which can keep every
    /// worker of the runtime busy, do not hold the board back. Yields what was read, what the
    /// board was filled with and when, in seconds after `began`.
    fn read_back(
        &self,
        slots: &BTreeSet<i32>,
        filling: Gate<()>,
        began: Instant,
        announced: Option<Followed<AnnouncedKeys>>,
    ) -> impl std::future::Future<Output = Result<(Ahead, Differ, f64), Error>> {
        let settings = self.shared.settings.clone();
        let board = self.shared.board.clone();
        let (owned, n) = (slots.clone(), self.slots);
        crate::run::on_own_thread("read-back", async move {
            let mut shown = Differ::default();
            let mut serving_s = 0.0;
            let owns = |x: &Subject| owned.contains(&(salespulse_aggregate::slot_of(x, n) as i32));
            let serve = async |read: &crate::source::follow::Board| {
                let changes = shown.diff(read.series_of(owns));
                filling.with(|_| board.apply(&changes));
                serving_s = began.elapsed().as_secs_f64();
            };
            let ahead = Ahead::read_serving(&settings, P::METRICS, announced, serve).await?;
            Ok((ahead, shown, serving_s))
        })
    }

    /// The group's committed offsets of the assigned partitions (`true`: input), once every
    /// transaction holding some is decided: what a previous owner committed is then on the
    /// topics.
    fn read_committed(
        &mut self,
        input: &BTreeSet<i32>,
        slots: &BTreeSet<i32>,
    ) -> Result<HashMap<(bool, i32), i64>, Error> {
        let mut tpl = TopicPartitionList::new();
        for p in input {
            tpl.add_partition(self.shared.input, *p);
        }
        for s in slots {
            tpl.add_partition(&self.cells, *s);
        }
        let read = self.offsets.committed(&tpl)?;
        let mut out = HashMap::new();
        for e in read.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert((e.topic() == self.shared.input, e.partition()), o);
            }
        }
        self.committed.clone_from(&out);
        Ok(out)
    }

    /// A core per assigned input partition: its newest snapshot, if it is not ahead of the
    /// committed offset, then the records after it up to the committed offset, replayed
    /// without outputs; returns the records replayed.
    async fn replay_input(
        &mut self,
        input: &BTreeSet<i32>,
        committed: &HashMap<(bool, i32), i64>,
    ) -> Result<u64, Error> {
        let (settings, contract) = (self.shared.settings, self.shared.contract);
        let until = |p: &i32| committed.get(&(true, *p)).copied();
        let restored = futures_util::future::try_join_all(
            input
                .iter()
                .map(|p| self.restore_task(*p, until(p).unwrap_or(0))),
        )
        .await?;
        let mut cores = BTreeMap::new();
        let mut ranges = BTreeMap::new();
        for (p, (mut core, saved)) in input.iter().zip(restored) {
            for ev in self.roster.values() {
                core.roster(ev);
            }
            core.set_live(false);
            let from = saved.as_ref().and_then(|m| m.positions.get(p).copied());
            if let Some(until) = until(p) {
                ranges.insert(*p, (from, Some(until)));
            }
            cores.insert(*p, (core, saved, from.unwrap_or(0)));
        }
        let mut replayed = 0u64;
        let now = now_ms();
        let read = read_partitions(settings, self.shared.input, &ranges, |m| {
            let Some((core, _, _)) = cores.get_mut(&m.partition()) else {
                return;
            };
            let f = Format::from_content_type(content_type(m));
            let payload = m.payload().unwrap_or_default();
            let _ = f.and_then(|f| core.handle(contract, m.key(), payload, f, now));
            replayed += 1;
        })
        .await?;
        for (p, (mut core, saved, from)) in cores {
            core.end_recovery();
            core.set_live(true);
            let task = Task {
                core,
                next: read
                    .get(&p)
                    .copied()
                    .unwrap_or(from)
                    .max(until(&p).unwrap_or(0)),
                saved,
                saving: None,
                saved_at: Instant::now(),
            };
            self.tasks.insert(p, task);
        }
        Ok(replayed)
    }

    /// A core for input partition `p`, noting the cells it holds (see
    /// `Processor::begin_recovery`): restored from the partition's newest snapshot when there
    /// is one that reflects no record at or past `committed`, else empty. The roster is
    /// applied by the caller, after the state it may name reps of.
    async fn restore_task(&self, p: i32, committed: i64) -> Result<(P, Option<Manifest>), Error> {
        if self.shared.svc.snapshot_interval_seconds == 0 {
            return Ok((self.recovering_core()?, None));
        }
        let s = &self.shared;
        let owner = snapshot_owner(&s.svc.group_id, P::SERVICE, p);
        let usable = |m: &Manifest| m.positions.get(&p).is_some_and(|at| *at <= committed);
        crate::run::load_snapshot(s, &owner, || self.recovering_core(), usable).await
    }

    /// Publishes what differs from the metrics topic (read back into `differ`) for the owned
    /// subjects, and brings the board from what it served meanwhile (`shown`) to them.
    async fn take_over(&mut self, slots: &BTreeSet<i32>, mut shown: Differ) -> Result<(), Error> {
        let s = &self.shared;
        let n = self.slots;
        let owns = |x: &Subject| slots.contains(&(salespulse_aggregate::slot_of(x, n) as i32));
        let full = self.merger.snapshot();
        s.board.apply(&shown.diff_with_gone(full.clone(), owns));
        let changes = self.differ.diff_with_gone(full, owns);
        let format = s.settings.publish.format;
        self.out
            .publish(&s.settings.topics.metrics, &changes, format)
            .await
    }

    /// Commits the open transaction with the positions of both topics, under the group's
    /// metadata as of the assignment.
    async fn commit(&mut self, retry_for: Duration) -> Result<(), Error> {
        let Some(member) = self.member.clone() else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        let mut moved = false;
        let positions = self
            .tasks
            .iter()
            .map(|(p, t)| ((true, *p), t.next))
            .chain(self.cells_next.iter().map(|(s, n)| ((false, *s), *n)));
        for ((input, p), next) in positions {
            let topic = if input {
                self.shared.input
            } else {
                &self.cells
            };
            tpl.add_partition_offset(topic, p, Offset::Offset(next))
                .map_err(|e| Error::kafka("building the commit", e))?;
            moved |= self.committed.get(&(input, p)) != Some(&next);
        }
        moved |= self.tasks.values().any(|t| t.saving.is_some());
        let (mut produced, queued) = self.out.take_pending();
        if queued == 0 && !moved {
            self.settled_at = Instant::now();
            return Ok(());
        }
        let began = Instant::now();
        if let Err(e) = settle(&mut produced).await {
            return self.produce_failed(e);
        }
        let producer = self.out.producer;
        let offsets = [(tpl, member.0.clone())];
        match tokio::task::block_in_place(|| commit_within(producer, &offsets, retry_for))? {
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
                for t in self.tasks.values_mut() {
                    if let Some(m) = t.saving.take() {
                        t.saved = Some(m);
                    }
                }
                self.announced_in_txn.clear();
                for e in offsets[0].0.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        let input = e.topic() == self.shared.input;
                        self.committed.insert((input, e.partition()), o);
                    }
                }
                self.settled_at = Instant::now();
            }
            Ended::Aborted => self.aborted("the commit was refused"),
        }
        Ok(())
    }

    /// A record that could not be produced dooms the open transaction: it is aborted and the
    /// instance built again from what is committed.
    fn produce_failed(&mut self, e: Error) -> Result<(), Error> {
        crate::sink::transaction::abort_unless_stalled(self.out.producer, self.settled_at, e)?;
        self.aborted("a record could not be produced");
        Ok(())
    }

    fn aborted(&mut self, why: &str) {
        TransactionEnded {
            outcome: "aborted",
            why: Some(why),
        }
        .emit(self.shared.health);
        let _ = self.out.take_pending();
        self.unannounce_aborted();
        self.built = None;
    }

    /// The celebrations of an aborted transaction are not on their topic: they may be
    /// announced again.
    fn unannounce_aborted(&mut self) {
        for key in self.announced_in_txn.drain(..) {
            self.announced.remove(&key);
        }
    }

    fn report(&mut self) {
        let h = self.shared.health;
        let mut sizes: BTreeMap<&'static str, usize> = BTreeMap::new();
        for t in self.tasks.values() {
            for (kind, n) in t.core.state_sizes() {
                *sizes.entry(kind).or_default() += n;
            }
        }
        sizes.insert("merged_cells", self.merger.cells());
        for (kind, n) in sizes {
            h.state.with_label_values(&[kind]).set(n as i64);
        }
        h.board_series.set(self.shared.board.len() as i64);
        h.ready
            .set(i64::from(self.shared.ready.load(Ordering::Relaxed)));
    }
}

/// Moves the consumer to the given offsets; whether every partition moved. Records the loop
/// skipped before a rebuild are read again only through this, so a partition that could not
/// be moved yet (its fetch not started) is tried again for a few seconds.
fn seek_all(consumer: &TasksConsumer, tpl: TopicPartitionList) -> bool {
    if tpl.count() == 0 {
        return true;
    }
    for _ in 0..40 {
        let failed: Vec<String> = match tokio::task::block_in_place(|| {
            consumer.seek_partitions(tpl.clone(), Duration::from_secs(5))
        }) {
            Ok(done) => done
                .elements()
                .iter()
                .filter_map(|e| e.error().err().map(|x| format!("{}: {x}", e.partition())))
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        if failed.is_empty() {
            return true;
        }
        info!(failed = ?failed, "seeking the input partitions; trying again");
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// The key of a contribution on the cells topic: the source partition, the rep and the team
/// its records named, length-prefixed so that any id round-trips.
fn cell_key(source: u32, c: &Contribution) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + c.rep.len());
    k.extend_from_slice(&source.to_be_bytes());
    k.extend_from_slice(&(c.rep.len() as u32).to_be_bytes());
    k.extend_from_slice(c.rep.as_bytes());
    if let Some(t) = &c.team {
        k.extend_from_slice(t.as_bytes());
        k.push(1);
    } else {
        k.push(0);
    }
    k
}

/// (source, rep, team) of a contribution's key.
fn parse_cell_key(k: &[u8]) -> Option<(u32, &str, Option<&str>)> {
    let source = u32::from_be_bytes(k.get(..4)?.try_into().ok()?);
    let len = u32::from_be_bytes(k.get(4..8)?.try_into().ok()?) as usize;
    let rep = std::str::from_utf8(k.get(8..8 + len)?).ok()?;
    let (flag, rest) = k.get(8 + len..)?.split_last()?;
    let team = match flag {
        0 if rest.is_empty() => None,
        1 => Some(std::str::from_utf8(rest).ok()?),
        _ => return None,
    };
    Some((source, rep, team))
}

/// The end of each slot's partition of the cells topic, where an instance that is every
/// source reads on from. A transaction still open below it is of a member the group has
/// moved on from, so it aborts.
fn slot_ends(
    probe: &BaseConsumer,
    cells: &str,
    slots: &BTreeSet<i32>,
) -> Result<BTreeMap<i32, i64>, Error> {
    slots
        .iter()
        .map(|s| Ok((*s, crate::kafka::watermarks(probe, cells, *s)?.1)))
        .collect()
}

fn apply_cell(merger: &mut Merger, m: &BorrowedMessage<'_>) {
    apply_contribution(merger, m.partition(), m.offset(), m.key(), m.payload());
}

/// `merger` (of the assigned slots) with their contributions read whole; returns it, where
/// each slot's partition was read to, and how many contributions were read.
async fn read_cells(
    settings: &Settings,
    cells: &str,
    slots: &BTreeSet<i32>,
    mut merger: Merger,
) -> Result<(Merger, BTreeMap<i32, i64>, u64), Error> {
    let mut contributions = 0u64;
    // Until compaction catches up, a key holds many values of which only the latest
    // counts: only those are decoded and merged, and a withdrawn key not at all.
    let mut latest: HashMap<(i32, Vec<u8>), Latest> = HashMap::new();
    let whole = slots.iter().map(|s| (*s, (None, None))).collect();
    let ends = read_partitions(settings, cells, &whole, |m| {
        let key = (m.partition(), m.key().unwrap_or_default().to_vec());
        latest.insert(key, (m.offset(), m.payload().map(<[u8]>::to_vec)));
        contributions += 1;
    })
    .await?;
    for ((slot, key), (offset, value)) in latest {
        if value.is_some() {
            apply_contribution(&mut merger, slot, offset, Some(&key), value.as_deref());
        }
    }
    Ok((merger, ends, contributions))
}

/// What `f` gives, and the seconds it took.
async fn timed<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> Result<(T, f64), E> {
    let began = Instant::now();
    f.await.map(|v| (v, began.elapsed().as_secs_f64()))
}

fn apply_contribution(
    merger: &mut Merger,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some((source, rep, team)) = key.and_then(parse_cell_key) else {
        warn!(
            partition,
            offset, "a contribution without a valid key; skipped"
        );
        return;
    };
    let c = Contribution {
        slot: partition as u32,
        rep: rep.into(),
        team: team.map(Into::into),
        value: value.map(<[u8]>::to_vec),
    };
    if let Err(e) = merger.apply(&c, source) {
        warn!(error = %e, partition, offset, "a contribution does not decode; skipped");
    }
}

/// A key's latest record on the cells topic: its offset and value.
type Latest = (i64, Option<Vec<u8>>);

#[cfg(test)]
mod tests {
    use super::*;

    /// Once the rebuild that made it has ended, a fill changes nothing on the board.
    #[test]
    fn a_rebuild_that_ended_stops_its_fill() {
        use salespulse_aggregate::{series_key, Change, Metric, Scope, Series};
        let board = Board::new(salespulse_expose::Exposed::default());
        let change = |cents: i64| {
            let s = Series {
                scope: Scope::Org,
                metric: Metric::OpenPipeline,
                rep: None,
                team: None,
                region: None,
                window: None,
                extra: Default::default(),
                value: rust_decimal::Decimal::new(cents, 2),
                name: None,
            };
            vec![Change {
                key: series_key(&s),
                series: Some(s),
            }]
        };
        let filling: Gate<()> = Gate::open();
        let stop = filling.closed_on_drop();
        filling.with(|_| board.apply(&change(100)));
        assert_eq!(board.len(), 1);
        drop(stop);
        board.clear();
        filling.with(|_| board.apply(&change(200)));
        assert!(
            board.is_empty(),
            "a fill after its rebuild ended reached the board"
        );
    }

    /// A partition's state is kept only when it is assigned again and the group's committed
    /// offset is where that state stands: an offset moved on means another instance applied
    /// records of it meanwhile; none committed, that it cannot be told.
    #[test]
    fn only_partitions_committed_where_their_state_stands_are_kept() {
        let held = [(0, 10), (1, 20), (2, 30), (3, 40)];
        let assigned = BTreeSet::from([0, 1, 2, 5]);
        let committed = HashMap::from([
            ((true, 0), 10),
            ((true, 1), 25),
            ((false, 2), 30),
            ((true, 3), 40),
            ((true, 5), 7),
        ]);
        assert_eq!(
            unchanged(held, &assigned, &committed, true),
            BTreeSet::from([0])
        );
        assert_eq!(
            unchanged(held, &assigned, &committed, false),
            BTreeSet::from([2])
        );
        assert!(unchanged([], &assigned, &committed, true).is_empty());
    }

    #[test]
    fn contribution_keys_round_trip() {
        for (rep, team) in [
            ("rep-1", None),
            ("rep/2\u{0}", Some("team\u{1}")),
            ("", Some("")),
        ] {
            let c = Contribution {
                slot: 3,
                rep: rep.into(),
                team: team.map(Into::into),
                value: None,
            };
            let k = cell_key(7, &c);
            assert_eq!(parse_cell_key(&k), Some((7, rep, team)));
        }
        assert_eq!(parse_cell_key(b"\0\0"), None);
    }
}
