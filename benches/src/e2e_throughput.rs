//! End to end from the broker: the deals service's records/s next to a bare rdkafka consumer
//! reading the same topic in the same run.
//!
//! Needs a broker (`scripts/kafka.sh start`) and release binaries:
//! `cargo build --release --bins && cargo run --release -p salespulse-bench --bin e2e-throughput -- [records]`

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_bench::broker::{
    bootstrap, committed, cpu_seconds, create_topic, group_watcher, produce_all, start_deals,
};
use salespulse_bench::deal_records;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let suffix = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp());
    let topic = format!("bench.{suffix}.deals");
    create_topic(&topic).await;

    let now = chrono::Utc::now().timestamp_millis();
    let recs = deal_records(n, 200_000, 1_000, 30 * 86_400_000, now, false, 11);
    let t = Instant::now();
    produce_all(&topic, &recs);
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
    let mut child = start_deals(&suffix, &topic, port, &format!("bench-{suffix}"), &[]);
    // Progress is read from the group's committed offsets, not from /metrics: rendering a
    // large board many times a second would take the CPU the service is being measured on.
    // Commits trail processing by about a tick at both ends, so the rate is measured between
    // the first and the last movement.
    let watcher = group_watcher(&format!("bench-{suffix}"));
    let committed = |c: &BaseConsumer| committed(c, &topic) as f64;
    let mut first: Option<(Instant, f64)> = None;
    let mut cpu_at_first = 0.0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (end, total) = loop {
        assert!(
            Instant::now() < deadline,
            "the service did not finish within 600 s"
        );
        let c = committed(&watcher);
        if c > 0.0 && first.is_none() {
            first = Some((Instant::now(), c));
            cpu_at_first = cpu_seconds(child.id());
        }
        if c >= n as f64 {
            break (Instant::now(), c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = cpu_seconds(child.id()) - cpu_at_first;
    let _ = child.kill();
    let _ = child.wait();
    let (start, at_start) = first.unwrap_or((end, 0.0));
    let wall = end.duration_since(start).as_secs_f64().max(1e-9);
    let svc = (total - at_start) / wall;
    println!("deals service (decode, aggregate, dead letters, publish): {svc:>10.0} records/s");
    println!("ratio service / bare consumer: {:.2}", svc / bare);
    println!(
        "deals service CPU over that: {cpu:.1} s of {wall:.1} s ({:.2} cores busy), {:.0} records per CPU-second",
        cpu / wall,
        (total - at_start) / cpu.max(1e-9)
    );
}
