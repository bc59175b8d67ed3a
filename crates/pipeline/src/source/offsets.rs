//! The committed offsets of a group, read by a client that does nothing else, so that it can
//! be replaced. Offsets are committed in the services' transactions, not here.
//!
//! After a broker restart librdkafka can leave a client's group-coordinator requests queued
//! and never sent (confluentinc/librdkafka#2791) while the same client goes on fetching:
//! reading the committed offsets then times out for minutes, though the broker answers every
//! other client at once. A client of its own is dropped and created afresh when a read goes
//! unanswered.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use tracing::warn;

use crate::config::Settings;
use crate::kafka::client_config;
use crate::Error;

/// How long one request for the committed offsets may take before the client is replaced and
/// the request sent again.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long reading the committed offsets is retried before the error counts. A broker that
/// has just started may not have a group coordinator yet.
const READ_DEADLINE: Duration = Duration::from_secs(30);

/// Reads one group's committed offsets.
pub(crate) struct GroupOffsets<'a> {
    settings: &'a Settings,
    group: String,
    client: BaseConsumer,
}

impl<'a> GroupOffsets<'a> {
    pub fn new(settings: &'a Settings, group: &str) -> Result<Self, Error> {
        Ok(GroupOffsets {
            client: Self::client(settings, group)?,
            settings,
            group: group.to_owned(),
        })
    }

    fn client(settings: &Settings, group: &str) -> Result<BaseConsumer, Error> {
        client_config(settings)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // Offsets committed in a transaction still open are not read as committed: the
            // read waits until it is decided.
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| Error::kafka("creating the offsets client", e))
    }

    fn replace(&mut self, why: &str) -> Result<(), Error> {
        warn!(group = %self.group, why, "replacing the client that reads offsets");
        self.client = Self::client(self.settings, &self.group)?;
        Ok(())
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
}
