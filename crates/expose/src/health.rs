//! The pipeline's own metrics: what came in, what was rejected, how far behind it is.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use crate::families::health as names;

#[derive(Debug, Clone)]
pub struct Health {
    pub registry: Registry,
    /// Records by topic and outcome: applied, duplicate, stale, rejected.
    pub events: IntCounterVec,
    /// Rejected records by topic and reason.
    pub rejected: IntCounterVec,
    /// Kafka timestamp of the newest record consumed, by topic.
    pub last_event: GaugeVec,
    /// Messages between the consumer's position and the end of each partition.
    pub lag: IntGaugeVec,
    pub published: IntCounter,
    /// Entries held in memory, by kind (deals, cells, event_ids).
    pub state: IntGaugeVec,
    pub ready: IntGauge,
    pub board_series: IntGauge,
    /// Size and time of the newest state snapshot, written or loaded at start-up.
    pub snapshot_bytes: IntGauge,
    pub snapshot_timestamp: Gauge,
    /// How long the start-up restore took, and how many input records it replayed.
    pub restore_seconds: Gauge,
    pub restore_replayed: IntGauge,
    /// Slots (shares of the series) this instance exports, and whether it holds the leader slot.
    pub owned_slots: IntGauge,
    pub leader: IntGauge,
    /// Alert and celebration records produced, by topic and kind.
    pub announcements: IntCounterVec,
    /// Seconds until the next tick: how late a number on the board can be.
    pub tick_interval: Gauge,
    /// Seconds the loop spent in each stage of its ticks (`clock`, `export`, `commit`).
    pub tick_seconds: HistogramVec,
    /// Transactions ended, by outcome (`committed`, `aborted`, `fenced`, `wedged`).
    pub transactions: IntCounterVec,
    /// What the group did to this instance's share, by change (`assigned`, `revoked`).
    pub rebalances: IntCounterVec,
    /// Consumers found standing still behind their end and replaced, by consumer.
    pub consumers_replaced: IntCounterVec,
}

impl Health {
    pub fn new(service: &str) -> Health {
        let registry = Registry::new_custom(
            None,
            Some([("service".to_owned(), service.to_owned())].into()),
        )
        .expect("static registry settings are valid");
        let events = IntCounterVec::new(
            Opts::new(
                names::EVENTS_TOTAL,
                "Records consumed, by topic and outcome.",
            ),
            &["topic", "outcome"],
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                names::REJECTED_TOTAL,
                "Records sent to the dead-letter topic, by topic and reason.",
            ),
            &["topic", "reason"],
        )
        .expect("valid metric");
        let last_event = GaugeVec::new(
            Opts::new(
                names::LAST_EVENT_TIMESTAMP,
                "Kafka timestamp (Unix seconds) of the newest record consumed, by topic.",
            ),
            &["topic"],
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                names::CONSUMER_LAG,
                "Records between the consumer position and the end of the partition.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let published = IntCounter::new(
            names::METRICS_PUBLISHED_TOTAL,
            "Records (values and tombstones) produced to the metrics topic.",
        )
        .expect("valid metric");
        let state = IntGaugeVec::new(
            Opts::new(names::STATE_ENTRIES, "Entries held in memory, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            names::READY,
            "1 when the service has restored its state and caught up on its partitions.",
        )
        .expect("valid metric");
        let board_series = IntGauge::new(
            names::SCRAPE_SERIES,
            "Business series currently exposed on /metrics.",
        )
        .expect("valid metric");
        let snapshot_bytes = IntGauge::new(
            names::SNAPSHOT_BYTES,
            "Size of the newest state snapshot, written or loaded at start-up.",
        )
        .expect("valid metric");
        let snapshot_timestamp = Gauge::new(
            names::SNAPSHOT_TIMESTAMP,
            "When (Unix seconds) the newest state snapshot was taken.",
        )
        .expect("valid metric");
        let restore_seconds = Gauge::new(
            names::RESTORE_SECONDS,
            "Seconds the start-up restore took (snapshot load and replay to the committed offsets, the producer and clients connected alongside).",
        )
        .expect("valid metric");
        let restore_replayed = IntGauge::new(
            names::RESTORE_REPLAYED,
            "Input records replayed at start-up to rebuild the state past the snapshot.",
        )
        .expect("valid metric");
        let owned_slots = IntGauge::new(
            names::OWNED_SLOTS,
            "Slots of the service's group assigned to this instance: it exports the series that hash to them.",
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            names::LEADER,
            "1 when this instance holds slot 0: org series, dead letters, celebrations, offsets, snapshots.",
        )
        .expect("valid metric");
        let announcements = IntCounterVec::new(
            Opts::new(
                names::ANNOUNCEMENTS_TOTAL,
                "Alert and celebration records produced, by topic and kind.",
            ),
            &["topic", "kind"],
        )
        .expect("valid metric");
        let tick_interval = Gauge::new(
            names::TICK_INTERVAL,
            "Seconds between two ticks (windows moved, changed series emitted), as paced now.",
        )
        .expect("valid metric");
        let tick_seconds = HistogramVec::new(
            HistogramOpts::new(
                names::TICK_SECONDS,
                "Seconds the loop spent in each stage of its ticks: moving the clock (windows), exporting the changed series (compared, shown, encoded and produced), committing the transaction (acknowledgements awaited, then the commit).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["stage"],
        )
        .expect("valid metric");
        let transactions = IntCounterVec::new(
            Opts::new(
                names::TRANSACTIONS_TOTAL,
                "Kafka transactions of this instance's outputs ended, by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let rebalances = IntCounterVec::new(
            Opts::new(
                names::REBALANCES_TOTAL,
                "Rebalances of the instance's group: partitions or slots handed to it (assigned) or taken away (revoked).",
            ),
            &["change"],
        )
        .expect("valid metric");
        let consumers_replaced = IntCounterVec::new(
            Opts::new(
                names::CONSUMERS_REPLACED_TOTAL,
                "Consumers that read nothing for a while although behind their partitions' end, and were replaced, by consumer.",
            ),
            &["consumer"],
        )
        .expect("valid metric");
        // At 0 from the start, so that the first replacement is an increase a rule can see.
        let replaceable: &[&str] = if service == "targets" {
            &["targets"]
        } else {
            &["roster", "input", "group"]
        };
        for consumer in replaceable {
            consumers_replaced.with_label_values(&[consumer]);
        }
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rebalances.clone()),
            Box::new(consumers_replaced.clone()),
            Box::new(transactions.clone()),
            Box::new(announcements.clone()),
            Box::new(tick_interval.clone()),
            Box::new(tick_seconds.clone()),
            Box::new(rejected.clone()),
            Box::new(last_event.clone()),
            Box::new(lag.clone()),
            Box::new(published.clone()),
            Box::new(state.clone()),
            Box::new(ready.clone()),
            Box::new(board_series.clone()),
            Box::new(snapshot_bytes.clone()),
            Box::new(snapshot_timestamp.clone()),
            Box::new(restore_seconds.clone()),
            Box::new(restore_replayed.clone()),
            Box::new(owned_slots.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(c)
                .expect("each family is registered once");
        }
        Health {
            registry,
            events,
            rejected,
            last_event,
            lag,
            published,
            state,
            ready,
            board_series,
            snapshot_bytes,
            snapshot_timestamp,
            restore_seconds,
            restore_replayed,
            owned_slots,
            leader,
            announcements,
            tick_interval,
            tick_seconds,
            transactions,
            rebalances,
            consumers_replaced,
        }
    }
}
