//! State snapshots on a compacted topic, so that a start restores the state and replays only
//! the input that came after it, instead of all retained history.
//!
//! A snapshot is the encoded state of a core plus, per input partition, the offset of the
//! first record it does not reflect. It is taken between two batches, after every output
//! produced for the records it reflects has been acknowledged, so resuming from its offsets
//! neither loses nor repeats anything. The state is split into chunks (records stay far below
//! the broker's size limit) keyed `<owner>/<generation>/<chunk>`; the manifest, keyed
//! `<owner>/manifest`, is written only after every chunk is acknowledged, and names the
//! generation. The chunks of the generation it replaces are then deleted by tombstones, so
//! compaction keeps one snapshot per owner. The owner is the consumer group and the service,
//! `<group>/<service>`, because the positions are that group's in that service's input.

use std::collections::{BTreeMap, HashMap};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::Settings;
use crate::sink::settle;
use crate::source::read_to_end;
use crate::Error;

/// Largest chunk of encoded state in one record.
const CHUNK_BYTES: usize = 512 * 1024;

/// What a snapshot is, written after its chunks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub generation: u64,
    pub chunks: u32,
    pub bytes: u64,
    /// Input partition -> offset of the first record not reflected in the state.
    pub positions: BTreeMap<i32, i64>,
    pub taken_at_ms: i64,
}

/// A snapshot read back at start-up.
#[derive(Debug)]
pub(crate) struct Saved {
    pub manifest: Manifest,
    pub state: Vec<u8>,
}

fn manifest_key(owner: &str) -> String {
    format!("{owner}/manifest")
}

fn chunk_key(owner: &str, generation: u64, chunk: u32) -> String {
    format!("{owner}/{generation}/{chunk}")
}

/// Reads the newest complete snapshot of `owner`, if any.
pub(crate) async fn load(settings: &Settings, owner: &str) -> Result<Option<Saved>, Error> {
    let topic = &settings.topics.snapshots;
    let manifest_key = manifest_key(owner);
    let prefix = format!("{owner}/");
    let mut manifest: Option<Manifest> = None;
    let mut chunks: HashMap<String, Vec<u8>> = HashMap::new();
    read_to_end(settings, topic, |key, payload| {
        if key == manifest_key {
            manifest = payload.and_then(|p| match serde_json::from_slice(p) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(topic = %topic, error = %e, "ignoring an unreadable snapshot manifest");
                    None
                }
            });
        } else if key.starts_with(&prefix) {
            match payload {
                Some(p) => {
                    chunks.insert(key.to_owned(), p.to_vec());
                }
                None => {
                    chunks.remove(key);
                }
            }
        }
    })
    .await?;
    let Some(manifest) = manifest else {
        return Ok(None);
    };
    let mut state = Vec::with_capacity(usize::try_from(manifest.bytes).unwrap_or(0));
    for i in 0..manifest.chunks {
        match chunks.remove(&chunk_key(owner, manifest.generation, i)) {
            Some(c) => state.extend_from_slice(&c),
            None => {
                warn!(topic = %topic, generation = manifest.generation, chunk = i, "snapshot incomplete; replaying all input instead");
                return Ok(None);
            }
        }
    }
    if state.len() as u64 != manifest.bytes {
        warn!(topic = %topic, generation = manifest.generation, "snapshot size differs from its manifest; replaying all input instead");
        return Ok(None);
    }
    Ok(Some(Saved { manifest, state }))
}

/// Writes a snapshot and waits until it is durable, then deletes the one it replaces.
pub(crate) async fn save(
    producer: &FutureProducer,
    settings: &Settings,
    owner: &str,
    state: &[u8],
    positions: BTreeMap<i32, i64>,
    previous: Option<&Manifest>,
) -> Result<Manifest, Error> {
    let topic = &settings.topics.snapshots;
    let now = crate::run::now_ms();
    let generation = previous
        .map(|m| m.generation + 1)
        .unwrap_or(0)
        .max(u64::try_from(now).unwrap_or(0));
    let mut pending = Vec::new();
    let mut chunks = 0u32;
    for (i, chunk) in state.chunks(CHUNK_BYTES).enumerate() {
        let key = chunk_key(owner, generation, i as u32);
        pending.push(send(producer, topic, &key, Some(chunk)).await?);
        chunks += 1;
    }
    settle(&mut pending).await?;
    let manifest = Manifest {
        generation,
        chunks,
        bytes: state.len() as u64,
        positions,
        taken_at_ms: now,
    };
    let body = serde_json::to_vec(&manifest).unwrap_or_default();
    pending.push(send(producer, topic, &manifest_key(owner), Some(&body)).await?);
    settle(&mut pending).await?;
    if let Some(old) = previous.filter(|m| m.generation != generation) {
        for i in 0..old.chunks {
            let key = chunk_key(owner, old.generation, i);
            pending.push(send(producer, topic, &key, None).await?);
        }
        settle(&mut pending).await?;
    }
    Ok(manifest)
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
) -> Result<rdkafka::producer::DeliveryFuture, Error> {
    let mut rec = FutureRecord::to(topic).key(key.as_bytes());
    if let Some(p) = payload {
        rec = rec.payload(p);
    }
    let mut rec = rec;
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                rec = r;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(Error::kafka("producing a snapshot", e)),
        }
    }
}
