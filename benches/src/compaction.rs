//! What a reader from the start of a compacted topic gets against its segment age: 2,000 keys
//! written again every second for a while (as a divided service's ticks rewrite its cells),
//! then the topic read from its start and its records counted, once right after and once 20 s
//! later. The cleaner never compacts the segment being written, so what a rebuild reads is the
//! latest values plus about one segment age of writes.
//!
//! Needs a broker (`scripts/kafka.sh start`):
//! `cargo run --release -p salespulse-bench --bin compaction -- [seconds] [segment.ms...]`
//! (default: 150 s, segment ages of one minute and one hour).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use salespulse_bench::broker::{bootstrap, delete_topics_of};

const KEYS: usize = 2_000;

/// Records a reader from the start gets, up to the end the topic has now.
fn count(topic: &str) -> usize {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "bench-compaction")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (_, end) = c
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    c.assign(&tpl).expect("assign");
    let (mut n, deadline) = (0, Instant::now() + Duration::from_secs(120));
    loop {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(200)) {
            n += 1;
        }
        let at = c
            .position()
            .ok()
            .and_then(|p| p.elements().first().map(|e| e.offset()));
        if matches!(at, Some(Offset::Offset(o)) if o >= end) {
            return n;
        }
        assert!(Instant::now() < deadline, "{topic} not read within 120 s");
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = args.first().copied().unwrap_or(150);
    let ages = match args.get(1..) {
        Some(a) if !a.is_empty() => a.to_vec(),
        _ => vec![60_000, 3_600_000],
    };
    let run = format!("compaction-{}", std::process::id());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    for age in ages {
        let topic = format!("bench.{run}.{age}");
        let segment_ms = age.to_string();
        let spec = NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("segment.ms", &segment_ms);
        admin
            .create_topics(&[spec], &AdminOptions::new())
            .await
            .expect("topic created");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let (began, mut written) = (Instant::now(), 0);
        let value = vec![b'x'; 100];
        while began.elapsed() < Duration::from_secs(seconds) {
            for k in 0..KEYS {
                let key = k.to_string();
                let mut record = BaseRecord::to(&topic).key(&key).payload(&value);
                while let Err((_, r)) = producer.send(record) {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
                written += 1;
            }
            producer.flush(Duration::from_secs(30)).expect("flushed");
            std::thread::sleep(Duration::from_secs(1));
        }
        let now = count(&topic);
        std::thread::sleep(Duration::from_secs(20));
        println!(
            "segment.ms {age}: {written} records of {KEYS} keys written in {seconds} s; \
             a reader from the start gets {now}, and {} 20 s later",
            count(&topic)
        );
    }
    delete_topics_of(&run).await;
}
