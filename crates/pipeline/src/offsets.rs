//! The committed offsets of a group whose consumer is assigned its partitions, read and
//! written by a client that does nothing else, so that it can be replaced.
//!
//! After a broker restart librdkafka can leave a client's group-coordinator requests queued
//! and never sent (confluentinc/librdkafka#2791) while the same client goes on fetching:
//! commits then fail with "Waiting for coordinator" and reading the committed offsets times out
//! for minutes, though the broker answers every other client at once. A client of its own is
//! dropped and created afresh when its coordinator requests go unanswered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::warn;

use crate::config::Settings;
use crate::kafka::client_config;
use crate::Error;

/// How long commits may go without a success (while some were sent) before the client is
/// replaced. A healthy coordinator answers within milliseconds; a broker that is away makes
/// every client fail alike, and replacing one then costs only its creation.
const REPLACE_AFTER: Duration = Duration::from_secs(15);

/// How long one request for the committed offsets may take before the client is replaced and
/// the request sent again.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long reading the committed offsets is retried before the error counts. A broker that
/// has just started may not have a group coordinator yet.
const READ_DEADLINE: Duration = Duration::from_secs(30);

/// Counts of commit outcomes, written by the client's callback.
#[derive(Debug, Default)]
struct Outcomes {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct OffsetsContext(Arc<Outcomes>);

impl ClientContext for OffsetsContext {}

impl ConsumerContext for OffsetsContext {
    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "offset commit failed; it is retried on the next tick");
            }
        }
    }
}

/// Whether commits have gone without a success for too long: the oldest commit sent since
/// the last success was sent `limit` or more ago.
fn stuck(oldest_unanswered: Option<Duration>, limit: Duration) -> bool {
    oldest_unanswered.is_some_and(|d| d >= limit)
}

/// Reads and commits one group's offsets.
pub(crate) struct GroupOffsets<'a> {
    settings: &'a Settings,
    group: &'a str,
    client: BaseConsumer<OffsetsContext>,
    outcomes: Arc<Outcomes>,
    /// Successes counted when last looked.
    ok_seen: u64,
    /// When the oldest commit sent since the last success was sent.
    unanswered_since: Option<Instant>,
}

impl<'a> GroupOffsets<'a> {
    pub fn new(settings: &'a Settings, group: &'a str) -> Result<Self, Error> {
        let outcomes = Arc::new(Outcomes::default());
        Ok(GroupOffsets {
            client: Self::client(settings, group, &outcomes)?,
            settings,
            group,
            outcomes,
            ok_seen: 0,
            unanswered_since: None,
        })
    }

    fn client(
        settings: &Settings,
        group: &str,
        outcomes: &Arc<Outcomes>,
    ) -> Result<BaseConsumer<OffsetsContext>, Error> {
        client_config(settings)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // Offsets committed in a transaction still open are not read as committed.
            .set("isolation.level", "read_committed")
            .create_with_context(OffsetsContext(outcomes.clone()))
            .map_err(|e| Error::kafka("creating the offsets client", e))
    }

    fn replace(&mut self, why: &str) -> Result<(), Error> {
        warn!(group = %self.group, why, "replacing the client that commits offsets");
        self.outcomes = Arc::new(Outcomes::default());
        self.client = Self::client(self.settings, self.group, &self.outcomes)?;
        self.ok_seen = 0;
        self.unanswered_since = None;
        Ok(())
    }

    /// Serves the callbacks of earlier commits; a success answers every commit before it.
    fn serve(&mut self) {
        while self.client.poll(Duration::ZERO).is_some() {}
        let ok = self.outcomes.ok.load(Ordering::Relaxed);
        if ok != self.ok_seen {
            self.ok_seen = ok;
            self.unanswered_since = None;
        }
    }

    /// The group's committed offsets of the partitions in `tpl`.
    pub fn committed(&mut self, tpl: &TopicPartitionList) -> Result<TopicPartitionList, Error> {
        let deadline = Instant::now() + READ_DEADLINE;
        loop {
            match tokio::task::block_in_place(|| {
                self.client.committed_offsets(tpl.clone(), READ_TIMEOUT)
            }) {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::kafka("reading committed offsets", e))
                }
                Err(e) => {
                    tracing::info!(error = %e, "committed offsets not read; retrying with a new client");
                    self.replace("reading the committed offsets failed")?;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// Commits without waiting; the outcome is seen at the next call.
    pub fn commit(&mut self, tpl: &TopicPartitionList) -> Result<(), Error> {
        self.serve();
        if stuck(self.unanswered_since.map(|t| t.elapsed()), REPLACE_AFTER) {
            self.replace("commits went unanswered")?;
        }
        if let Err(e) = self.client.commit(tpl, CommitMode::Async) {
            warn!(error = %e, "offset commit failed; it is retried on the next tick");
        }
        self.unanswered_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Commits and waits up to `timeout` for the outcome (at shutdown).
    pub fn commit_and_wait(
        &mut self,
        tpl: &TopicPartitionList,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.serve();
        let answered =
            |o: &Outcomes| o.ok.load(Ordering::Relaxed) + o.failed.load(Ordering::Relaxed);
        let before = answered(&self.outcomes);
        let failed_before = self.outcomes.failed.load(Ordering::Relaxed);
        self.client
            .commit(tpl, CommitMode::Async)
            .map_err(|e| Error::kafka("committing offsets", e))?;
        let deadline = Instant::now() + timeout;
        while answered(&self.outcomes) == before {
            if Instant::now() >= deadline {
                return Err(Error::kafka(
                    "committing offsets",
                    KafkaError::ConsumerCommit(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            tokio::task::block_in_place(|| self.client.poll(Duration::from_millis(100)));
        }
        if self.outcomes.failed.load(Ordering::Relaxed) > failed_before {
            return Err(Error::kafka(
                "committing offsets",
                KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_stuck_only_when_commits_went_unanswered_for_the_limit() {
        let limit = Duration::from_secs(15);
        // Everything sent was answered: healthy however long ago the last commit was.
        assert!(!stuck(None, limit));
        // Unanswered, within the limit.
        assert!(!stuck(Some(Duration::from_secs(3)), limit));
        // Unanswered (or failing) past the limit.
        assert!(stuck(Some(Duration::from_secs(15)), limit));
    }
}
