//! State snapshots on a compacted topic, so that a start restores the state and replays only
//! the input that came after it, instead of all retained history.
//!
//! A snapshot is the encoded state of a core plus, per input partition, the offset of the
//! first record it does not reflect. It is taken between two batches, after every output
//! produced for the records it reflects has been acknowledged, so resuming from its offsets
//! neither loses nor repeats anything. The state is split into chunks (records stay far below
//! the broker's size limit) keyed `<owner>/<generation>/<chunk>`; the manifest, keyed
//! `<owner>/manifest`, is written only after every chunk is acknowledged, and names the
//! generation and the offset of its first chunk. The chunks of the generation it replaces
//! are then deleted by tombstones, so compaction keeps one snapshot per owner. The owner is the consumer group and the service,
//! `<group>/<service>`, because the positions are that group's in that service's input.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::Settings;
use crate::events::InternalEvent;
use crate::sink::settle;
use crate::source::{Start, TailReader};
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
    /// Partition and offset of the first chunk (absent in manifests of an older layout).
    #[serde(default)]
    pub first_chunk: Option<(i32, i64)>,
}

fn manifest_key(owner: &str) -> String {
    format!("{owner}/manifest")
}

fn chunk_key(owner: &str, generation: u64, chunk: u32) -> String {
    format!("{owner}/{generation}/{chunk}")
}

/// Records read back from the end of the topic at first when looking for the newest
/// manifest; each look reads four times as many as the one before, up to the whole topic.
/// The manifest is written again after the previous snapshot's tombstones, so that it is the
/// owner's last record and a short first look finds it; a look long enough to reach past the
/// tombstones would read the chunks of the snapshot before it too (33 MiB for 200,000 deals).
const FIRST_LOOK: i64 = 8;

/// Reads the newest snapshot of `owner` that `usable` accepts and sends its chunks to
/// `pieces`, in order, as they are read: the state is rebuilt from the first while the rest
/// are still on their way. Returns its manifest when every chunk was sent; `None` when there is
/// none, or when what was sent is not the whole snapshot (the state rebuilt from it is then to
/// be dropped).
///
/// The topic holds every snapshot taken since compaction last ran (it never compacts the
/// segment being written), so reading it whole costs time in proportion to the snapshots
/// taken, not to the one wanted. The newest manifest is at the end, or near it (other owners'
/// snapshots may come after it, and a save of an older build wrote the manifest only before
/// its tombstones): looks back from the end, widening, find it; its chunks are then read from
/// the offset of the first one.
pub(crate) async fn load(
    settings: &Settings,
    owner: &str,
    usable: impl Fn(&Manifest) -> bool,
    pieces: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Option<Manifest>, Error> {
    let topic = &settings.topics.snapshots;
    // One reader looks back for the manifest and then reads the chunks.
    let reader = TailReader::new(settings, topic)?;
    let loaded = load_with(&reader, owner, usable, pieces).await;
    reader.close();
    loaded
}

async fn load_with(
    reader: &TailReader,
    owner: &str,
    usable: impl Fn(&Manifest) -> bool,
    pieces: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Option<Manifest>, Error> {
    let topic = reader.topic();
    let mut look = FIRST_LOOK;
    let (tail, mut found, manifest) = loop {
        let mut found = Found::new(owner);
        let tail = reader
            .read(Some(Start::Last(look)), |k, p| {
                found.record(topic, k, p);
                ControlFlow::Continue(())
            })
            .await?;
        match found.manifest.take() {
            Some(m) => break (tail, found, m),
            None if tail.whole => return Ok(None),
            None => look = look.saturating_mul(4),
        }
    };
    if !usable(&manifest) {
        warn!(
            owner,
            "snapshot ahead of the committed offsets; replaying instead"
        );
        return Ok(None);
    }
    let mut sent = Sent::new(owner, &manifest, pieces);
    // A single-partition topic (as created) has the chunks after the offset of the first; one
    // with more partitions, or a manifest of an older layout, is read whole.
    let first = manifest
        .first_chunk
        .filter(|_| tail.partitions == 1)
        .map(|(_, o)| o);
    let from = match first {
        _ if tail.whole => None,
        Some(o) if o >= tail.started => None,
        Some(o) => Some(Start::At(o)),
        None => Some(Start::At(0)),
    };
    match from {
        // The look back read every chunk.
        None => {
            for i in 0..manifest.chunks {
                let key = chunk_key(owner, manifest.generation, i);
                match found.chunks.remove(&key) {
                    Some(c) => sent.record(&key, Some(&c)),
                    None => break,
                }
            }
        }
        Some(from) => {
            // Read up to the last chunk: what follows is other owners' snapshots (in divided
            // ingest, each input partition has its own) and tombstones of older ones.
            reader
                .read(Some(from), |k, p| {
                    sent.record(k, p);
                    match sent.complete() {
                        true => ControlFlow::Break(()),
                        false => ControlFlow::Continue(()),
                    }
                })
                .await?;
        }
    }
    Ok(sent.finish(topic).then_some(manifest))
}

/// The chunks of one snapshot, sent on in their order as they are read.
struct Sent<'m> {
    prefix: String,
    manifest: &'m Manifest,
    next: u32,
    bytes: u64,
    /// A chunk came out of order or was deleted: what was sent is not the snapshot.
    broken: bool,
    pieces: std::sync::mpsc::Sender<Vec<u8>>,
}

impl<'m> Sent<'m> {
    fn new(owner: &str, manifest: &'m Manifest, pieces: std::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Sent {
            prefix: format!("{owner}/{}/", manifest.generation),
            manifest,
            next: 0,
            bytes: 0,
            broken: false,
            pieces,
        }
    }

    fn record(&mut self, key: &str, payload: Option<&[u8]>) {
        let Some(i) = key
            .strip_prefix(&self.prefix)
            .and_then(|i| i.parse::<u32>().ok())
        else {
            return;
        };
        if self.broken || i >= self.manifest.chunks {
            return;
        }
        match payload {
            Some(p) if i == self.next => {
                self.next += 1;
                self.bytes += p.len() as u64;
                // A rebuild that stopped (the state does not fit) takes no more.
                let _ = self.pieces.send(p.to_vec());
            }
            _ => self.broken = true,
        }
    }

    /// Every chunk was sent, or what was sent is known not to be the snapshot.
    fn complete(&self) -> bool {
        self.broken || self.next == self.manifest.chunks
    }

    fn finish(self, topic: &str) -> bool {
        let m = self.manifest;
        if self.broken || self.next != m.chunks {
            warn!(topic = %topic, generation = m.generation, chunks = m.chunks, read = self.next, "snapshot incomplete; replaying all input instead");
            return false;
        }
        if self.bytes != m.bytes {
            warn!(topic = %topic, generation = m.generation, "snapshot size differs from its manifest; replaying all input instead");
            return false;
        }
        true
    }
}

/// What a look back at the end of the snapshot topic found of one owner: its newest manifest
/// and the chunks not deleted since.
struct Found {
    manifest_key: String,
    prefix: String,
    manifest: Option<Manifest>,
    chunks: HashMap<String, Vec<u8>>,
}

impl Found {
    fn new(owner: &str) -> Found {
        Found {
            manifest_key: manifest_key(owner),
            prefix: format!("{owner}/"),
            manifest: None,
            chunks: HashMap::new(),
        }
    }

    fn record(&mut self, topic: &str, key: &str, payload: Option<&[u8]>) {
        if key == self.manifest_key {
            self.manifest = payload.and_then(|p| match serde_json::from_slice(p) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(topic = %topic, error = %e, "ignoring an unreadable snapshot manifest");
                    None
                }
            });
        } else if key.starts_with(&self.prefix) {
            match payload {
                Some(p) => {
                    self.chunks.insert(key.to_owned(), p.to_vec());
                }
                None => {
                    self.chunks.remove(key);
                }
            }
        }
    }
}

/// Writes a snapshot and waits until it is durable, then deletes the one it replaces; the
/// write is reported (`SnapshotWritten`) from `began`, when the state was taken.
pub(crate) async fn save(
    producer: &FutureProducer,
    settings: &Settings,
    health: &salespulse_expose::Health,
    owner: &str,
    (state, began): (&[u8], std::time::Instant),
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
    // Where the first chunk landed tells a start where to read the snapshot from.
    let first_chunk = match pending.is_empty() {
        true => None,
        false => match pending.remove(0).await {
            Ok(Ok(d)) => Some((d.partition, d.offset)),
            Ok(Err((e, _))) => return Err(Error::kafka("producing a snapshot", e)),
            Err(_) => return Err(Error::Config("producer dropped a delivery".into())),
        },
    };
    settle(&mut pending).await?;
    let manifest = Manifest {
        generation,
        chunks,
        bytes: state.len() as u64,
        positions,
        taken_at_ms: now,
        first_chunk,
    };
    let body = serde_json::to_vec(&manifest).unwrap_or_default();
    pending.push(send(producer, topic, &manifest_key(owner), Some(&body)).await?);
    settle(&mut pending).await?;
    if let Some(old) = previous.filter(|m| m.generation != generation) {
        for i in 0..old.chunks {
            let key = chunk_key(owner, old.generation, i);
            pending.push(send(producer, topic, &key, None).await?);
        }
        // The manifest again, now after the tombstones: the newest record of the owner, which
        // a start finds in a short look back from the end (see `load`).
        pending.push(send(producer, topic, &manifest_key(owner), Some(&body)).await?);
        settle(&mut pending).await?;
    }
    crate::events::SnapshotWritten {
        bytes: state.len(),
        generation: manifest.generation,
        taken_at_ms: manifest.taken_at_ms,
        seconds: began.elapsed().as_secs_f64(),
    }
    .emit(health);
    Ok(manifest)
}

/// Writes the manifests of snapshots saved one after the other once more, after all of them.
/// A divided instance saves a snapshot per input partition; a start then finds every
/// partition's newest manifest in the first short look back from the end (see `load`), and
/// reads each snapshot's chunks only.
pub(crate) async fn write_manifests(
    producer: &FutureProducer,
    settings: &Settings,
    manifests: &[(String, &Manifest)],
) -> Result<(), Error> {
    let topic = &settings.topics.snapshots;
    let mut pending = Vec::with_capacity(manifests.len());
    for (owner, m) in manifests {
        let body = serde_json::to_vec(m).unwrap_or_default();
        pending.push(send(producer, topic, &manifest_key(owner), Some(&body)).await?);
    }
    settle(&mut pending).await
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
