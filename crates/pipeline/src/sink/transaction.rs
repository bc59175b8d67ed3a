//! Consume–transform–produce in Kafka transactions.
//!
//! Every instance has one transactional producer, and a transaction is always open: whatever
//! the instance produces between two ticks (metric changes, dead letters, celebrations) goes
//! into it, and the tick commits it together with the consumed input offsets (the leader's)
//! and the instance's place in the slots group. Readers that read `read_committed` see all of
//! a tick's outputs or none. A snapshot that is due is written after the tick's commit, in a
//! transaction of its own with the same offsets, so that its seconds of encoding and writing
//! do not count against the tick's transaction timeout.
//!
//! Fencing comes from the slots group, as Kafka Streams' `exactly_once_v2` gets it from its
//! consumer group: each commit carries the group metadata (generation and member id) of the
//! assignment the instance exports under, so the broker refuses the commit of a member the
//! group has moved on from — an instance paused past its session timeout — and what it
//! produced is aborted. One paused past the transaction timeout finds its producer fenced
//! (its transaction was aborted by the coordinator) and starts over.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::TopicPartitionList;
use tracing::warn;

use crate::Error;

/// How long produce failures may go on, no transaction committing, before the service stops.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// How long one transactional call may block.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call that takes a timeout may go past it before the producer counts as wedged.
/// librdkafka's `send_offsets_to_transaction` can wait forever for a group coordinator that
/// went away, whatever its timeout (confluentinc/librdkafka#5456, #5511): the instance, its
/// loop blocked, would serve a frozen board while the group moves on without it.
const WEDGED_AFTER: Duration = Duration::from_secs(20);
/// How long [`init`] waits for the producer's first broker connection.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// How long a call that fails with a retriable error (the coordinator away) is tried again:
/// as long as librdkafka keeps a record before it fails its delivery (`message.timeout.ms`).
/// Meanwhile the loop waits; the service does not stop.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(300);

/// A transactional id of its own for each process start: fencing is by group generation, and
/// an instance killed mid-transaction has it aborted by the coordinator after
/// `transaction.timeout.ms`.
pub(crate) fn transactional_id(group: &str, service: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{group}-{service}-{}-{nanos:08x}", std::process::id())
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Committed,
    /// Refused (the group moved on, a record was refused): nothing of it is visible, and a new
    /// transaction is open.
    Aborted,
}

/// Errors after which the producer cannot go on (fenced by a newer epoch, or a fatal state).
fn fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    }
}

fn requires_abort(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.txn_requires_abort(),
        _ => false,
    }
}

fn retriable(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_retriable(),
        _ => false,
    }
}

fn error(context: &str, e: KafkaError) -> Error {
    if fatal(&e) {
        Error::Fenced(e.to_string())
    } else {
        Error::kafka(context, e)
    }
}

// Every call blocks until the broker answers; callers on the runtime wrap them in
// `block_in_place`.

/// Registers the producer's transactional id with the coordinator and opens the first
/// transaction.
pub(crate) fn init(producer: &FutureProducer) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // A producer just made has no broker connection up yet. Asked for its coordinator then,
    // librdkafka finds no broker to ask and tries again on a 500 ms timer: half a second of
    // many starts. A metadata request waits for the first connection. Its failure
    // changes nothing, nor does a broker that does not answer within the wait: then
    // `init_transactions` below reports and retries what is wrong, as it did without it.
    let _ = producer.client().fetch_metadata(None, CONNECT_WAIT);
    loop {
        match producer.init_transactions(CALL_TIMEOUT) {
            Ok(()) => break,
            Err(e) if retriable(&e) && std::time::Instant::now() < deadline => {
                warn!(error = %e, "starting transactions failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(error("starting transactions", e)),
        }
    }
    begin(producer)
}

fn begin(producer: &FutureProducer) -> Result<(), Error> {
    producer
        .begin_transaction()
        .map_err(|e| error("beginning a transaction", e))
}

/// Commits the open transaction with `offsets` (each list with the group metadata it is
/// committed under), then opens the next. Deliveries should be awaited first: with records
/// still in flight, rust-rdkafka's commit polls the delivery queue, which the producer's own
/// thread serves, and so waits out its 100 ms poll.
pub(crate) fn commit(
    producer: &FutureProducer,
    offsets: &[(TopicPartitionList, Arc<ConsumerGroupMetadata>)],
) -> Result<Ended, Error> {
    commit_within(producer, offsets, RETRY_FOR)
}

/// [`commit`], retrying calls that fail with a retriable error for up to `retry_for`.
pub(crate) fn commit_within(
    producer: &FutureProducer,
    offsets: &[(TopicPartitionList, Arc<ConsumerGroupMetadata>)],
    retry_for: Duration,
) -> Result<Ended, Error> {
    let attempt = || -> Result<Result<(), KafkaError>, Error> {
        for (tpl, group) in offsets {
            if tpl.count() > 0 {
                let sent = retrying("sending offsets", retry_for, || {
                    let (p, tpl, group) = (producer.clone(), tpl.clone(), group.clone());
                    bounded("sending offsets to the transaction", move || {
                        p.send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT)
                    })
                })?;
                if sent.is_err() {
                    return Ok(sent);
                }
            }
        }
        retrying("committing", retry_for, || {
            let p = producer.clone();
            bounded("committing the transaction", move || {
                p.commit_transaction(CALL_TIMEOUT)
            })
        })
    };
    match attempt()? {
        Ok(()) => {
            begin(producer)?;
            Ok(Ended::Committed)
        }
        Err(e) if fatal(&e) => Err(Error::Fenced(e.to_string())),
        Err(e) => {
            warn!(error = %e, abortable = requires_abort(&e), "committing a transaction failed; aborting it");
            abort(producer)?;
            Ok(Ended::Aborted)
        }
    }
}

/// Aborts the open transaction and opens the next.
pub(crate) fn abort(producer: &FutureProducer) -> Result<(), Error> {
    retrying("aborting", RETRY_FOR, || {
        let p = producer.clone();
        bounded("aborting the transaction", move || {
            p.abort_transaction(CALL_TIMEOUT)
        })
    })?
    .map_err(|e| error("aborting a transaction", e))?;
    begin(producer)
}

/// A record that could not be produced dooms the open transaction: aborts it (and opens
/// the next). Errors other than Kafka's are handed back, untouched.
pub(crate) fn abort_after(producer: &FutureProducer, e: Error) -> Result<(), Error> {
    if !matches!(e, Error::Kafka { .. }) {
        return Err(e);
    }
    warn!(error = %e, "producing failed; aborting the open transaction");
    tokio::task::block_in_place(|| abort(producer))
}

/// [`abort_after`] for a loop that commits as it goes: once nothing has been committed for
/// longer than [`GIVE_UP_AFTER`] (since `settled_at`), longer than librdkafka keeps a record,
/// the failure stops the service with its error instead.
pub(crate) fn abort_unless_stalled(
    producer: &FutureProducer,
    settled_at: std::time::Instant,
    e: Error,
) -> Result<(), Error> {
    if settled_at.elapsed() > GIVE_UP_AFTER {
        return Err(e);
    }
    abort_after(producer, e)
}

/// Calls `call` again while it fails with a retriable error, for up to `retry_for`.
fn retrying(
    what: &str,
    retry_for: Duration,
    mut call: impl FnMut() -> Result<Result<(), KafkaError>, Error>,
) -> Result<Result<(), KafkaError>, Error> {
    let deadline = std::time::Instant::now() + retry_for;
    loop {
        match call()? {
            Err(e) if retriable(&e) && std::time::Instant::now() < deadline => {
                warn!(error = %e, what, "a transactional call failed; retrying");
            }
            r => return Ok(r),
        }
    }
}

/// Runs a transactional call on a thread of its own and waits for it for [`CALL_TIMEOUT`]
/// and [`WEDGED_AFTER`] more. A call that has not returned by then holds the producer's
/// transactional state for good: [`Error::Wedged`], and the instance starts over with a new
/// producer, leaving the call's thread behind. The coordinator aborts the transaction it left
/// open after `transaction.timeout.ms`.
fn bounded(
    what: &'static str,
    call: impl FnOnce() -> Result<(), KafkaError> + Send + 'static,
) -> Result<Result<(), KafkaError>, Error> {
    within(CALL_TIMEOUT + WEDGED_AFTER, what, call)
}

fn within(
    limit: Duration,
    what: &'static str,
    call: impl FnOnce() -> Result<(), KafkaError> + Send + 'static,
) -> Result<Result<(), KafkaError>, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("txn-call".into())
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(|e| Error::Io(format!("starting a thread for {what}"), e))?;
    rx.recv_timeout(limit).map_err(|_| {
        Error::Wedged(format!(
            "{what} did not return within {:.0} s",
            limit.as_secs_f64()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_never_returns_in_time_wedges_the_producer() {
        let quick = within(Duration::from_secs(5), "a quick call", || Ok(()));
        assert!(matches!(quick, Ok(Ok(()))), "{quick:?}");
        let refused = within(Duration::from_secs(5), "a refused call", || {
            Err(KafkaError::Canceled)
        });
        assert!(
            matches!(refused, Ok(Err(KafkaError::Canceled))),
            "{refused:?}"
        );
        let began = std::time::Instant::now();
        let stuck = within(Duration::from_millis(100), "a stuck call", || {
            std::thread::sleep(Duration::from_secs(3));
            Ok(())
        });
        assert!(
            matches!(&stuck, Err(Error::Wedged(why)) if why.contains("a stuck call")),
            "{stuck:?}"
        );
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "waited for the stuck call"
        );
    }

    #[test]
    fn transactional_ids_differ_between_services_and_groups() {
        let a = transactional_id("g", "deals");
        assert!(a.starts_with("g-deals-"));
        assert_ne!(a, transactional_id("g", "activities"));
        assert_ne!(a, transactional_id("h", "deals"));
    }
}
