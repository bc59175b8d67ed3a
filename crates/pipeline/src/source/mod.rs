//! Inputs: the service's input topic, where each of its partitions stands (restoring,
//! quiet, live), the roster table, and reading compacted topics to their end.

pub(crate) mod follow;
pub(crate) mod offsets;
pub(crate) mod roster;
pub(crate) mod watch;

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use prometheus::{Gauge, IntCounter};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use salespulse_aggregate::Outcome;
use salespulse_decode::{Contract, Format};
use salespulse_expose::Health;
use salespulse_publish::PublishFormat;
use tracing::warn;

use crate::config::Settings;
use crate::events::{InternalEvent, RosterRecordRejected, Source};
use crate::kafka::{client_config, partitions, watermarks, ReadToEnd, SetDefaults};
use crate::sink::Outputs;
use crate::source::offsets::GroupOffsets;
use crate::state::processor::Processor;
use crate::Error;

/// Where each input partition stands.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// Next offset to read.
    pub next: HashMap<i32, i64>,
    /// Records below these were processed by an earlier run: they rebuild the state only.
    pub restore_until: HashMap<i32, i64>,
    /// Records below these had their dead letters and celebrations produced already.
    pub quiet_until: HashMap<i32, i64>,
    /// Records replayed to restore the state.
    pub restore_total: i64,
    /// Where this instance started reading each partition.
    pub first: HashMap<i32, i64>,
}

impl Positions {
    /// Plans the start: every partition is read from the snapshot's position (else from its
    /// start); records below the group's committed offset rebuild the state silently, the
    /// rest are processed live.
    pub fn plan(
        parts: &[(i32, i64, Option<i64>)],
        saved: Option<&std::collections::BTreeMap<i32, i64>>,
    ) -> Positions {
        let mut pos = Positions::default();
        for &(p, low, committed) in parts {
            let saved = saved.and_then(|s| s.get(&p).copied());
            if saved.is_some_and(|s| s < low) {
                warn!(partition = p, snapshot = ?saved, low, "input older than the snapshot was deleted by retention");
            }
            let from = saved.unwrap_or(low).max(low);
            pos.next.insert(p, from);
            pos.first.insert(p, from);
            if let Some(c) = committed.filter(|c| *c > from) {
                pos.restore_until.insert(p, c);
                pos.restore_total += c - from;
            }
        }
        pos.quiet_until = pos.restore_until.clone();
        pos
    }

    /// Whether some partition is more than `max_lag` records short of its end, by ends
    /// measured earlier (`ends`): ends only grow, so a stale one never overstates a backlog.
    pub fn behind(&self, ends: &std::collections::BTreeMap<i32, i64>, max_lag: i64) -> bool {
        ends.iter()
            .any(|(p, end)| end - self.next.get(p).copied().unwrap_or(0) > max_lag)
    }

    /// Whether any partition is still below its restore point.
    pub fn restoring(&self) -> bool {
        self.restore_until
            .iter()
            .any(|(p, until)| self.next.get(p).copied().unwrap_or(0) < *until)
    }

    /// Whether the record at `offset` is processed for the first time: its celebrations and
    /// dead letters are still to be produced.
    pub fn is_live(&self, partition: i32, offset: i64) -> bool {
        self.quiet_until
            .get(&partition)
            .is_none_or(|until| offset >= *until)
    }

    /// The offsets a leader commits: those past the quiet range, whose outputs it has
    /// produced.
    /// For a new leader, given the group's committed offsets: the records (partition, from,
    /// until) this instance processed whose dead letters no leader made durable. A partition
    /// the group never committed had none made durable (every transaction commits the
    /// positions of the partitions its dead letters come from), so it is every record this
    /// instance read of it. Where this instance is behind the committed offset it stays quiet
    /// until it reaches it.
    pub fn unannounced(&mut self, committed: impl Fn(i32) -> Option<i64>) -> Vec<(i32, i64, i64)> {
        let mut ranges = Vec::new();
        for (p, at) in &self.next {
            let Some(c) = committed(*p).or_else(|| self.first.get(p).copied()) else {
                continue;
            };
            if *at < c {
                self.quiet_until.insert(*p, c);
            } else if *at > c {
                ranges.push((*p, c, *at));
            }
        }
        ranges.sort_unstable();
        ranges
    }

    pub fn committable(&self) -> Vec<(i32, i64)> {
        self.next
            .iter()
            .filter(|(p, o)| self.quiet_until.get(p).is_none_or(|q| *o >= q))
            .map(|(p, o)| (*p, *o))
            .collect()
    }
}

/// The context of consumers that ask for partition ends: the input consumer's (the end of a
/// partition ends a backlog, see the pacer) and topic readers' (the end of a transactional
/// topic is known from reaching it). The end comes back from `recv`; rust-rdkafka also hands
/// it to the context as a global error, which the default context would log at error level
/// for every fetch that reaches the end.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct InputContext;

impl ClientContext for InputContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_end(&error) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for InputContext {}

/// The consumer of a service's input topic.
pub(crate) type InputConsumer = StreamConsumer<InputContext>;

/// Fetch sizes of the consumers that read backlogs (the input, and whole topics at a rebuild):
/// up to 16 MiB a partition and 64 MiB a request per round trip, rather than librdkafka's 1 MiB
/// a partition, unless `kafka.properties` set them. With the default the loop working off a backlog waited for its next records
/// about half the time (docs/benchmarks.md, End to end); a fetch still returns as soon as any
/// record is there, so a service that is caught up waits no longer. Such fetches fill
/// librdkafka's local queue past its thresholds (64 MiB, or 100,000 records a partition)
/// whenever the reader is slower than the broker, and librdkafka then postpones the next fetch
/// of each partition by `fetch.queue.backoff.ms`, a whole second by default: here 10 ms.
pub(crate) const LARGE_FETCHES: [(&str, &str); 3] = [
    ("max.partition.fetch.bytes", "16777216"),
    ("fetch.max.bytes", "67108864"),
    ("fetch.queue.backoff.ms", "10"),
];

fn is_partition_end(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::Global(RDKafkaErrorCode::PartitionEOF) | KafkaError::PartitionEOF(_)
    )
}

/// A client of its own for measuring the ends of the input partitions. On the input
/// consumer's connection a query for them waits behind its fetch, which the broker holds up to
/// `fetch.wait.max.ms` (500 ms) when there is nothing new: about a second for three idle
/// partitions, during which the loop stood still.
pub(crate) fn end_probe(settings: &Settings) -> Result<BaseConsumer, Error> {
    client_config(settings)
        // The ends a read_committed consumer reaches: the last stable offsets.
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| Error::kafka("creating the client that measures lag", e))
}

/// The input consumer of `group` (assigning partitions needs one; the group's offsets are
/// read and committed apart), not assigned yet, with the low watermarks of the input's
/// partitions.
pub(crate) struct InputToAssign {
    consumer: InputConsumer,
    topic: String,
    lows: Vec<(i32, i64)>,
}

impl InputToAssign {
    /// Creates the consumer and reads where each partition of `topic` starts.
    pub fn connect(settings: &Settings, group: &str, topic: &str) -> Result<Self, Error> {
        let consumer = input_consumer(settings, group)?;
        let mut lows = Vec::new();
        for p in partitions(&consumer, topic)? {
            lows.push((p, watermarks(&consumer, topic, p)?.0));
        }
        Ok(InputToAssign {
            consumer,
            topic: topic.to_owned(),
            lows,
        })
    }

    /// Assigns the partitions from where the snapshot left off and the group's committed
    /// offsets (read now) say, and returns them with the plan. A low watermark that moved
    /// since it was read puts the start out of range: the consumer then starts at the new one.
    pub fn assign(
        self,
        offsets: &mut GroupOffsets<'_>,
        snapshot: Option<&std::collections::BTreeMap<i32, i64>>,
    ) -> Result<(InputConsumer, Vec<i32>, Positions), Error> {
        let topic = &self.topic;
        let mut tpl = TopicPartitionList::new();
        for (p, _) in &self.lows {
            tpl.add_partition(topic, *p);
        }
        let committed = offsets.committed(&tpl)?;
        let mut known = Vec::new();
        for (p, low) in &self.lows {
            let c = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            known.push((*p, *low, c));
        }
        let positions = Positions::plan(&known, snapshot);
        let mut assign = TopicPartitionList::new();
        for (p, from) in &positions.next {
            assign
                .add_partition_offset(topic, *p, Offset::Offset(*from))
                .map_err(|e| Error::kafka("assigning partitions", e))?;
        }
        self.consumer
            .assign(&assign)
            .map_err(|e| Error::kafka("assigning partitions", e))?;
        let parts = self.lows.iter().map(|(p, _)| *p).collect();
        Ok((self.consumer, parts, positions))
    }
}

/// The input consumer of `group`, not assigned yet.
fn input_consumer(settings: &Settings, group: &str) -> Result<InputConsumer, Error> {
    client_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        // The end of a partition ends a backlog: the loop then ticks without waiting out a
        // stretched interval.
        .set("enable.partition.eof", "true")
        .set_defaults(LARGE_FETCHES)
        .create_with_context(InputContext)
        .map_err(|e| Error::kafka("creating the input consumer", e))
}

/// A new input consumer of `group` in place of one that stood still, assigned at `at` (the
/// next offset of each partition). Blocking.
pub(crate) fn replace_input(
    settings: &Settings,
    group: &str,
    topic: &str,
    at: &BTreeMap<i32, i64>,
) -> Result<InputConsumer, Error> {
    let consumer = input_consumer(settings, group)?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in at {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .map_err(|e| Error::kafka("assigning partitions", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka("assigning partitions", e))?;
    Ok(consumer)
}

/// The health counters of one topic, resolved once: a labelled lookup per record would cost
/// more than decoding it.
pub(crate) struct TopicCounters {
    applied: IntCounter,
    duplicate: IntCounter,
    stale: IntCounter,
    last_event: Gauge,
    newest_ms: i64,
}

impl TopicCounters {
    pub fn new(health: &Health, topic: &str) -> TopicCounters {
        let c = |o: &str| health.events.with_label_values(&[topic, o]);
        TopicCounters {
            applied: c("applied"),
            duplicate: c("duplicate"),
            stale: c("stale"),
            last_event: health.last_event.with_label_values(&[topic]),
            newest_ms: 0,
        }
    }

    pub fn count(&mut self, m: &BorrowedMessage<'_>, o: Outcome) {
        self.observe(m);
        match o {
            Outcome::Applied => &self.applied,
            Outcome::Duplicate => &self.duplicate,
            Outcome::Stale => &self.stale,
        }
        .inc();
    }

    pub fn observe(&mut self, m: &BorrowedMessage<'_>) {
        if let Some(ts) = m.timestamp().to_millis() {
            self.newest_ms = self.newest_ms.max(ts);
        }
    }

    /// Publishes the newest timestamp; called once a tick.
    pub fn flush(&self) {
        if self.newest_ms > 0 {
            self.last_event.set(self.newest_ms as f64 / 1000.0);
        }
    }
}

/// Applies one roster record to the core; a rejected one is logged and counted.
pub(crate) fn apply_roster<P: Processor>(
    contract: &Contract,
    health: &Health,
    counters: &mut TopicCounters,
    core: &mut P,
    m: &BorrowedMessage<'_>,
) {
    counters.observe(m);
    let format = Format::from_content_type(content_type(m));
    match format.and_then(|f| contract.decode_roster(m.key(), m.payload(), f)) {
        Ok(ev) => {
            core.roster(&ev);
            counters.applied.inc();
        }
        Err(error) => RosterRecordRejected {
            source: Source {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
            },
            error: &error,
        }
        .emit(health),
    }
}

/// On taking the leader slot: dead-letters the rejects among the records between the group's
/// committed offsets (up to which the previous leader's dead letters are durable) and this
/// instance's position, which it processed without that duty. Where this instance is behind
/// the committed offsets instead, it stays quiet until it reaches them. Returns the number of
/// dead letters produced.
pub(crate) async fn catch_up_dead_letters<P: Processor>(
    settings: &Settings,
    contract: &Contract,
    offsets: &mut GroupOffsets<'_>,
    input: &str,
    pos: &mut Positions,
    out: &mut Outputs<'_>,
) -> Result<u64, Error> {
    let mut tpl = TopicPartitionList::new();
    for p in pos.next.keys() {
        tpl.add_partition(input, *p);
    }
    let committed = offsets.committed(&tpl)?;
    let ranges = pos.unannounced(|p| match committed.find_partition(input, p)?.offset() {
        Offset::Offset(c) => Some(c),
        _ => None,
    });
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
        let at = m.timestamp().to_millis().unwrap_or_else(crate::run::now_ms);
        let payload = m.payload().unwrap_or_default();
        let res = Format::from_content_type(content_type(&m))
            .and_then(|f| P::check(contract, m.key(), payload, f, at));
        if let Err(e) = res {
            out.dead_letter(&m, &e).await?;
            produced += 1;
        }
    }
    Ok(produced)
}

pub(crate) fn content_type<'a>(m: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case("content-type"))
        .and_then(|h| h.value)
}

/// Reads a topic from its beginning to its current end, handing each record's key and value
/// (`None` for a tombstone) to `f`.
pub async fn read_to_end(
    settings: &Settings,
    topic: &str,
    mut f: impl FnMut(&str, Option<&[u8]>),
) -> Result<(), Error> {
    read_tail(settings, topic, None, |k, v| {
        f(k, v);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(())
}

/// A consumer that reads topics `read_committed` up to given ends, and the clients that measure
/// those ends: high watermarks (`read_uncommitted`: transactions open now are waited for, see
/// [`ReadToEnd`]) and last stable offsets.
struct TopicReader {
    consumer: InputConsumer,
    probe: BaseConsumer,
    stable: BaseConsumer,
}

impl TopicReader {
    /// A reader of `topic`, and the topic's partitions. The topic's metadata is asked by both
    /// the consumer and the watermark probe, so that each knows the partitions' leaders before
    /// its first fetch or measured end: a client that has to look them up on its own does so
    /// with retries of its own, and a read then waited 0.5–1.1 s in about one in six.
    fn new(settings: &Settings, topic: &str) -> Result<(TopicReader, Vec<i32>), Error> {
        let consumer = client_config(settings)
            .set("group.id", "salespulse-topic-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            // The end of a partition is told by a fetch at it coming back empty, which the
            // broker holds for up to `fetch.wait.max.ms` (500 ms by default): a reader that
            // stops at the end waits only briefly.
            .set("fetch.wait.max.ms", "10")
            // A rebuild reads whole partitions of the cells and snapshot topics.
            .set_defaults(LARGE_FETCHES)
            .create_with_context(InputContext)
            .map_err(|e| Error::kafka("creating a topic reader", e))?;
        let client = |isolation: &str| -> Result<BaseConsumer, Error> {
            client_config(settings)
                .set("isolation.level", isolation)
                .create()
                .map_err(|e| Error::kafka("creating a metadata client", e))
        };
        let r = TopicReader {
            consumer,
            probe: client("read_uncommitted")?,
            stable: client("read_committed")?,
        };
        partitions(&r.consumer, topic)?;
        let parts = partitions(&r.probe, topic)?;
        Ok((r, parts))
    }

    /// Closes the clients on a thread of their own: each waits out its threads' poll, about
    /// 100 ms, and a start reads several topics one after the other.
    fn close(self) {
        crate::kafka::close_aside("a topic reader", self);
    }
}

/// Reads each partition of a topic from `start` (its beginning when `None`) to its current
/// end, handing each record's key and value to `f`, until `f` breaks.
pub(crate) async fn read_tail(
    settings: &Settings,
    topic: &str,
    start: Option<Start>,
    f: impl FnMut(&str, Option<&[u8]>) -> ControlFlow<()>,
) -> Result<Tail, Error> {
    let reader = TailReader::new(settings, topic)?;
    let tail = reader.read(start, f).await;
    reader.close();
    tail
}

/// Reads of the tail of one topic, one after the other, with the same clients: a look back
/// that finds where to read from, then the read from there, cost one set of connections
/// and metadata requests, not one each.
pub(crate) struct TailReader {
    r: TopicReader,
    topic: String,
    parts: Vec<i32>,
}

impl TailReader {
    pub fn new(settings: &Settings, topic: &str) -> Result<TailReader, Error> {
        let (r, parts) = TopicReader::new(settings, topic)?;
        Ok(TailReader {
            r,
            topic: topic.to_owned(),
            parts,
        })
    }

    /// As [`read_tail`]: each partition from `start` to its end as measured now.
    pub async fn read(
        &self,
        start: Option<Start>,
        mut f: impl FnMut(&str, Option<&[u8]>) -> ControlFlow<()>,
    ) -> Result<Tail, Error> {
        let (r, topic) = (&self.r, self.topic.as_str());
        let mut tpl = TopicPartitionList::new();
        let mut from = HashMap::new();
        let mut ends = HashMap::new();
        let mut tail = Tail {
            started: 0,
            whole: true,
            partitions: self.parts.len(),
        };
        for p in &self.parts {
            let (low, high) = watermarks(&r.probe, topic, *p)?;
            let at = match start {
                None => low,
                Some(Start::Last(n)) => (high - n).max(low),
                Some(Start::At(o)) => o.clamp(low, high),
            };
            tail.started = at;
            tail.whole &= at == low;
            if high > at {
                ends.insert(*p, high);
            }
            from.insert(*p, at);
            tpl.add_partition_offset(topic, *p, Offset::Offset(at))
                .map_err(|e| Error::kafka("assigning partitions", e))?;
        }
        // A new assignment replaces the last read's: what was fetched for it is dropped.
        r.consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka("assigning partitions", e))?;
        let mut reader =
            ReadToEnd::new(&r.consumer, topic, ends, from).with_stable_probe(&r.stable);
        while let Some(m) = reader.next().await? {
            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                if f(key, m.payload()).is_break() {
                    break;
                }
            }
        }
        Ok(tail)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn close(self) {
        self.r.close();
    }
}

/// Where to read a partition from (its beginning when `None`) and up to (its current end
/// when `None`).
pub(crate) type Range = (Option<i64>, Option<i64>);

/// Reads partitions of `topic`, each over its range, with one consumer, waiting for the
/// transactions open on them; hands each record to `f` and returns the offset each
/// partition was read to.
pub(crate) async fn read_partitions(
    settings: &Settings,
    topic: &str,
    ranges: &BTreeMap<i32, Range>,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<BTreeMap<i32, i64>, Error> {
    if ranges.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (r, _) = TopicReader::new(settings, topic)?;
    read_ranges(r, topic, ranges, f).await
}

/// Reads every partition of `topic` from its offset in `from` (its beginning when absent) to
/// its current end, as [`read_partitions`] does.
pub(crate) async fn read_from(
    settings: &Settings,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<BTreeMap<i32, i64>, Error> {
    let (r, parts) = TopicReader::new(settings, topic)?;
    let ranges = parts
        .iter()
        .map(|p| (*p, (from.get(p).copied(), None)))
        .collect();
    read_ranges(r, topic, &ranges, f).await
}

async fn read_ranges(
    r: TopicReader,
    topic: &str,
    ranges: &BTreeMap<i32, Range>,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<BTreeMap<i32, i64>, Error> {
    let mut at = BTreeMap::new();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, (from, until)) in ranges {
        let (low, high) = watermarks(&r.probe, topic, *p)?;
        let low = low.max(from.unwrap_or(0));
        let end = until.unwrap_or(high).min(high);
        at.insert(*p, low);
        if end > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))
                .map_err(|e| Error::kafka("assigning partitions", e))?;
            ends.insert(*p, end);
        }
    }
    if ends.is_empty() {
        r.close();
        return Ok(at);
    }
    r.consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka("assigning partitions", e))?;
    let starts = at.iter().map(|(p, o)| (*p, *o)).collect();
    let mut reader =
        ReadToEnd::new(&r.consumer, topic, ends.clone(), starts).with_stable_probe(&r.stable);
    while let Some(m) = reader.next().await? {
        let p = m.partition();
        if ends.get(&p).is_none_or(|end| m.offset() >= *end) {
            // What lies past the end is left for the consumer that goes on from there.
            let mut past = TopicPartitionList::new();
            past.add_partition(topic, p);
            let _ = r.consumer.pause(&past);
            continue;
        }
        at.insert(p, m.offset() + 1);
        f(&m);
    }
    drop(reader);
    r.close();
    for (p, end) in ends {
        at.entry(p).and_modify(|o| *o = (*o).max(end));
    }
    Ok(at)
}

/// What [`read_tail`] read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    /// Offset it started from (of the last partition).
    pub started: i64,
    /// Whether it read every partition from its beginning.
    pub whole: bool,
    pub partitions: usize,
}

/// Where [`read_tail`] starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// This many records before the end.
    Last(i64),
    /// At this offset.
    At(i64),
}

pub(crate) fn format_of(m: &BorrowedMessage<'_>, default: PublishFormat) -> PublishFormat {
    match content_type(m).map(|v| v == salespulse_decode::PROTOBUF_CONTENT_TYPE.as_bytes()) {
        Some(true) => PublishFormat::Protobuf,
        Some(false) => PublishFormat::Json,
        None => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input consumer that stopped fetching (here: paused) is replaced by one that goes on
    /// from the positions given: every record once, none skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replaced_input_consumer_goes_on_where_the_old_one_stood() {
        use std::time::Duration;

        let mock = crate::kafka::mock::Mock::new(1, &[("input", 2)]);
        let settings = &mock.settings;
        let produce = |from: i32, to: i32| {
            let mock = &mock;
            async move {
                for i in from..to {
                    mock.produce("input", Some(i % 2), &i.to_string()).await;
                }
            }
        };
        // Reads records (not partition ends) until `n` came or none comes for a while.
        async fn read(c: &InputConsumer, n: usize) -> Vec<(i32, i64)> {
            let mut got = Vec::new();
            while got.len() < n {
                match tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
                    Ok(Ok(m)) => got.push((m.partition(), m.offset())),
                    Ok(Err(e)) if is_partition_end(&e) => {}
                    Ok(Err(e)) => panic!("{e}"),
                    Err(_) => break,
                }
            }
            got.sort_unstable();
            got
        }
        produce(0, 6).await;
        let at = BTreeMap::from([(0, 0), (1, 0)]);
        let first = tokio::task::block_in_place(|| replace_input(settings, "g", "input", &at))
            .expect("assigned");
        assert_eq!(
            read(&first, 6).await,
            [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
        );
        let stood = first.assignment().expect("assignment");
        first.pause(&stood).expect("paused");
        produce(6, 10).await;
        assert!(
            read(&first, 1).await.is_empty(),
            "a paused consumer reads nothing"
        );
        let at = BTreeMap::from([(0, 3), (1, 3)]);
        let second = tokio::task::block_in_place(|| replace_input(settings, "g", "input", &at))
            .expect("assigned");
        assert_eq!(read(&second, 4).await, [(0, 3), (0, 4), (1, 3), (1, 4)]);
    }

    #[test]
    fn the_end_of_a_partition_is_not_an_error_for_the_log() {
        assert!(is_partition_end(&KafkaError::Global(
            RDKafkaErrorCode::PartitionEOF
        )));
        assert!(is_partition_end(&KafkaError::PartitionEOF(2)));
        assert!(!is_partition_end(&KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!is_partition_end(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
    }

    #[test]
    fn a_start_replays_from_the_snapshot_and_stays_quiet_up_to_the_committed_offsets() {
        let saved = [(0, 40), (1, 5)].into();
        // Partition 0: snapshot at 40, committed 70 → replay 40..70 quietly.
        // Partition 1: snapshot at 5 but retention deleted up to 10 → from 10, committed 10.
        // Partition 2: no snapshot, nothing committed → live from its start.
        let pos = Positions::plan(
            &[(0, 0, Some(70)), (1, 10, Some(10)), (2, 3, None)],
            Some(&saved),
        );
        assert_eq!(pos.next, [(0, 40), (1, 10), (2, 3)].into());
        assert_eq!(pos.restore_until, [(0, 70)].into());
        assert_eq!(pos.restore_total, 30);
        assert!(pos.restoring());
        assert!(!pos.is_live(0, 69) && pos.is_live(0, 70) && pos.is_live(2, 3));
        // A leader commits only what it produced the outputs of.
        let mut handed = pos.committable();
        handed.sort();
        assert_eq!(handed, [(1, 10), (2, 3)]);
    }

    #[test]
    fn a_new_leader_announces_what_it_read_past_the_committed_offsets_or_all_it_read() {
        // Started at 0 (no snapshot) on partitions 0 and 1, at 5 on partition 2 (retention),
        // at 30 on partition 3 (a snapshot).
        let mut pos = Positions::plan(
            &[(0, 0, None), (1, 0, None), (2, 5, None), (3, 0, Some(40))],
            Some(&[(3, 30)].into()),
        );
        // Read up to here as a follower, dead-lettering nothing.
        for (p, at) in [(0, 2_100), (1, 500), (2, 5), (3, 35)] {
            pos.next.insert(p, at);
        }
        // The group committed only partition 1, at 400, and partition 3, at 40.
        let committed = |p: i32| {
            [(1, 400), (3, 40)]
                .into_iter()
                .find(|c| c.0 == p)
                .map(|c| c.1)
        };
        assert_eq!(
            pos.unannounced(committed),
            // Partition 0 was never committed: every record read; partition 1 from the commit;
            // partition 2 read nothing; partition 3 is behind the commit.
            [(0, 0, 2_100), (1, 400, 500)]
        );
        assert_eq!(pos.quiet_until.get(&3), Some(&40));
    }

    #[test]
    fn without_a_snapshot_everything_below_the_committed_offsets_is_replayed() {
        let mut pos = Positions::plan(&[(0, 0, Some(12)), (1, 0, None)], None);
        assert_eq!(pos.restore_total, 12);
        pos.next.insert(0, 12);
        assert!(!pos.restoring());
    }

    #[test]
    fn behind_when_some_partition_lags_past_the_limit_by_the_last_measured_ends() {
        let mut pos = Positions::plan(&[(0, 0, None), (1, 0, None)], None);
        pos.next.extend([(0, 500), (1, 9_000)]);
        let ends = [(0, 1_500), (1, 10_000)].into();
        // 1,000 short on each: at the limit, not past it.
        assert!(!pos.behind(&ends, 1_000));
        assert!(pos.behind(&ends, 999));
        // Read past an end measured earlier: not behind by that measure.
        pos.next.insert(0, 2_000);
        assert!(!pos.behind(&[(0, 1_500)].into(), 0));
        // A partition never read counts from offset 0.
        assert!(pos.behind(&[(7, 1_001)].into(), 1_000));
    }
}
