//! End to end from the broker: the deals service's records/s next to a bare rdkafka consumer
//! reading the same topic in the same run.
//!
//! Needs a broker (`scripts/kafka.sh start`) and release binaries:
//! `cargo build --release --bins && cargo run --release -p salespulse-bench --bin e2e-throughput -- [records]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_bench::deal_records;

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let suffix = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp());
    let topic = format!("bench.{suffix}.deals");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("topic created");

    let now = chrono::Utc::now().timestamp_millis();
    let recs = deal_records(n, 200_000, 1_000, 30 * 86_400_000, now, false, 11);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let t = Instant::now();
    for (k, v) in &recs {
        let mut rec = BaseRecord::to(&topic)
            .key(k.as_slice())
            .payload(v.as_slice());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flushed");
    println!(
        "produced {n} JSON deal records in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // A bare consumer: poll every message, touch its payload, nothing else.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("bench-bare-{suffix}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let t = Instant::now();
    let mut seen = 0usize;
    let mut bytes = 0usize;
    while seen < n {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    let bare = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "bare rdkafka consumer:  {bare:>10.0} records/s ({:.0} MiB)",
        bytes as f64 / 1048576.0
    );
    drop(c);

    let port = 19_500 + (std::process::id() % 400) as u16;
    let bin = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())
        + "/release/salespulse-deals";
    let mut child = Command::new(&bin)
        .args([
            "--config",
            "config/salespulse.toml",
            "--bootstrap",
            &bootstrap(),
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--group-id",
            &format!("bench-{suffix}"),
        ])
        .env("SALESPULSE_TOPICS__DEALS", &topic)
        .env(
            "SALESPULSE_TOPICS__ROSTER",
            format!("bench.{suffix}.roster"),
        )
        .env(
            "SALESPULSE_TOPICS__METRICS",
            format!("bench.{suffix}.metrics"),
        )
        .env(
            "SALESPULSE_TOPICS__DEADLETTER",
            format!("bench.{suffix}.deadletter"),
        )
        .env(
            "SALESPULSE_TOPICS__SNAPSHOTS",
            format!("bench.{suffix}.snapshots"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (build with cargo build --release --bins)"));
    // Progress is read from the group's committed offsets, not from /metrics: rendering a
    // large board many times a second would take the CPU the service is being measured on.
    // Commits trail processing by about a tick at both ends, so the rate is measured between
    // the first and the last movement.
    let group = format!("bench-{suffix}");
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", &group)
        .create()
        .expect("watcher");
    let mut parts = TopicPartitionList::new();
    for p in 0..3 {
        parts.add_partition(&topic, p);
    }
    let committed = |c: &BaseConsumer| -> f64 {
        c.committed_offsets(parts.clone(), Duration::from_secs(5))
            .map(|t| {
                t.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(o as f64),
                        _ => None,
                    })
                    .sum()
            })
            .unwrap_or(0.0)
    };
    let mut first: Option<(Instant, f64)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (end, total) = loop {
        assert!(
            Instant::now() < deadline,
            "the service did not finish within 600 s"
        );
        let c = committed(&watcher);
        if c > 0.0 && first.is_none() {
            first = Some((Instant::now(), c));
        }
        if c >= n as f64 {
            break (Instant::now(), c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let (start, at_start) = first.unwrap_or((end, 0.0));
    let svc = (total - at_start) / end.duration_since(start).as_secs_f64().max(1e-9);
    println!("deals service (decode, aggregate, dead letters, publish): {svc:>10.0} records/s");
    println!("ratio service / bare consumer: {:.2}", svc / bare);
}
