//! Outputs: changed series to the metrics topic, rejected records to the dead-letter topic,
//! celebrations; and waiting for the broker to acknowledge them before offsets move.

pub(crate) mod gate;
pub(crate) mod transaction;

use std::time::Duration;

use chrono::Utc;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use salespulse_aggregate::Change;
use salespulse_decode::DecodeError;
use salespulse_expose::Health;
use salespulse_publish::PublishFormat;

use crate::config::Settings;
use crate::events::{InternalEvent, RecordRejected, Source};
use crate::kafka::{client_config, SetDefaults};
use crate::Error;

/// The producer of one instance, with the deliveries it has not awaited yet.
pub(crate) struct Outputs<'a> {
    pub producer: &'a FutureProducer,
    health: &'a Health,
    deadletter: &'a str,
    service: &'static str,
    pending: Vec<DeliveryFuture>,
    /// Records queued since [`Outputs::take_pending`] last ran, awaited or not.
    queued: u64,
}

/// The producer every output of a service goes through. Idempotence keeps each partition in
/// the order produced when a batch is retried (a broker restart): the last record of a
/// metric's key on the compacted topic is its value. With a transactional id, outputs are
/// produced in transactions (`crate::sink::transaction`); an instance killed mid-transaction has it
/// aborted after `transaction.timeout.ms` (10 s unless set), until when `read_committed`
/// readers of the partitions it wrote wait at its first record.
pub(crate) fn create_producer(
    settings: &Settings,
    transactional_id: Option<&str>,
) -> Result<FutureProducer, Error> {
    let mut config = client_config(settings);
    config.set_defaults([
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
        ("compression.type", "lz4"),
    ]);
    if let Some(id) = transactional_id {
        config
            .set("transactional.id", id)
            .set_defaults([("transaction.timeout.ms", "10000")]);
    }
    config
        .create()
        .map_err(|e| Error::kafka("creating the producer", e))
}

impl<'a> Outputs<'a> {
    pub fn new(
        producer: &'a FutureProducer,
        health: &'a Health,
        deadletter: &'a str,
        service: &'static str,
    ) -> Self {
        Outputs {
            producer,
            health,
            deadletter,
            service,
            pending: Vec::new(),
            queued: 0,
        }
    }

    /// Produces changed series to the metrics topic.
    pub async fn publish(
        &mut self,
        topic: &str,
        changes: &[Change],
        format: PublishFormat,
    ) -> Result<(), Error> {
        let mut values = salespulse_publish::Encoder::new(format, Utc::now());
        for c in changes {
            let value = values.value(c);
            let rec =
                FutureRecord::to(topic)
                    .key(c.key.as_bytes())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "content-type",
                        value: Some(format.content_type()),
                    }));
            let rec = match value {
                Some(v) => rec.payload(v),
                None => rec,
            };
            self.enqueue(rec).await?;
        }
        self.health.published.inc_by(changes.len() as u64);
        Ok(())
    }

    /// Sends a record the contract rejected to the dead-letter topic.
    pub async fn dead_letter(
        &mut self,
        m: &BorrowedMessage<'_>,
        e: &DecodeError,
    ) -> Result<(), Error> {
        self.reject(m, e.reason.code(), &e.detail).await
    }

    /// Sends a rejected record to the dead-letter topic as it came (key, value, headers), with
    /// the reason and its source position in headers.
    pub async fn reject(
        &mut self,
        m: &BorrowedMessage<'_>,
        reason: &str,
        detail: &str,
    ) -> Result<(), Error> {
        RecordRejected {
            source: Source {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
            },
            reason,
            detail,
        }
        .emit(self.health);
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
        for (key, value) in [
            ("reason", reason),
            ("reason.detail", detail),
            ("source.topic", m.topic()),
            ("source.partition", partition.as_str()),
            ("source.offset", offset.as_str()),
            ("service", self.service),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
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
    pub async fn enqueue<K, V>(&mut self, mut rec: FutureRecord<'_, K, V>) -> Result<(), Error>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        V: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(rec) {
                Ok(f) => {
                    self.pending.push(f);
                    self.queued += 1;
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

    /// Waits until everything queued so far is acknowledged.
    pub async fn settle(&mut self) -> Result<(), Error> {
        settle(&mut self.pending).await
    }

    /// The deliveries not awaited yet, and how many records were queued since the last call
    /// (some may have been awaited already, when the producer's queue was full).
    pub fn take_pending(&mut self) -> (Vec<DeliveryFuture>, u64) {
        (
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.queued),
        )
    }
}

/// Waits until every queued record is acknowledged. A record the broker refused after
/// librdkafka's own retries is an error: the caller aborts the open transaction, so that
/// offsets past it are never committed.
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
