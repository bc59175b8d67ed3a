//! What the end-to-end benchmarks share: a topic filled with records, a release service
//! process on its own topics, and the progress of its consumer group.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 3;

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Creates `topic` with [`PARTITIONS`] partitions.
pub async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("topic created");
}

/// Deletes every topic whose name holds `run` (the run's id: its topics, the services' and the
/// peer's internal ones). A run writes up to a few hundred MB; left on the broker, the runs
/// add up to gigabytes and the broker serves the runs after them more slowly.
pub async fn delete_topics_of(run: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let names: Vec<String> = match admin.inner().fetch_metadata(None, Duration::from_secs(10)) {
        Ok(md) => md
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n.contains(run))
            .collect(),
        Err(e) => {
            eprintln!("could not list the run's topics to delete them: {e}");
            return;
        }
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Err(e) = admin.delete_topics(&names, &AdminOptions::new()).await {
        eprintln!("could not delete the run's {} topics: {e}", names.len());
    }
}

/// Produces a roster of `reps` reps (`rep-00000`, …) in `teams` teams (`team-0`, …) to `topic`.
pub fn produce_roster(topic: &str, reps: usize, teams: usize) {
    let members: Vec<(Vec<u8>, Vec<u8>)> = (0..reps)
        .map(|r| {
            let rep = format!("rep-{r:05}");
            let v = serde_json::json!({ "rep_id": rep, "team_id": format!("team-{}", r % teams) });
            (rep.into_bytes(), serde_json::to_vec(&v).unwrap_or_default())
        })
        .collect();
    produce_all(topic, &members);
}

/// Produces every (key, value) to `topic` and waits until all are acknowledged.
pub fn produce_all(topic: &str, recs: &[(Vec<u8>, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for (k, v) in recs {
        let mut rec = BaseRecord::to(topic)
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
}

/// Starts the release deals service on `deals_topic`, with its other topics named after
/// `suffix`, in consumer group `group`, plus extra environment.
pub fn start_deals(
    suffix: &str,
    deals_topic: &str,
    port: u16,
    group: &str,
    env: &[(&str, &str)],
) -> Child {
    // BENCH_SERVICE_LOG=<file> keeps the service's log (appended to) for a look at its timing.
    let log = std::env::var_os("BENCH_SERVICE_LOG").map(std::path::PathBuf::from);
    start_deals_logged(suffix, deals_topic, port, group, env, log.as_deref())
}

/// As [`start_deals`], the service's log (JSON lines) appended to `log` when given.
pub fn start_deals_logged(
    suffix: &str,
    deals_topic: &str,
    port: u16,
    group: &str,
    env: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> Child {
    let bin = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())
        + "/release/salespulse-deals";
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--config",
        "config/salespulse.toml",
        "--bootstrap",
        &bootstrap(),
    ])
    .args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--group-id",
        group,
    ])
    .env("SALESPULSE_TOPICS__DEALS", deals_topic);
    for t in [
        "roster",
        "metrics",
        "deadletter",
        "snapshots",
        "celebrations",
    ] {
        cmd.env(
            format!("SALESPULSE_TOPICS__{}", t.to_uppercase()),
            format!("bench.{suffix}.{t}"),
        );
    }
    let log = log.map_or_else(Stdio::null, |path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|e| panic!("{}: {e}", path.display()), Stdio::from)
    });
    cmd.envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (build with cargo build --release --bins)"))
}

/// Sum of the offsets `group` has committed on every partition of `topic`.
pub fn committed(c: &BaseConsumer, group_topic: &str) -> i64 {
    let Ok(md) = c.fetch_metadata(Some(group_topic), Duration::from_secs(5)) else {
        return 0;
    };
    let mut parts = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        parts.add_partition(group_topic, p.id());
    }
    c.committed_offsets(parts, Duration::from_secs(5))
        .map(|t| {
            t.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The text of a service's `/metrics`.
pub async fn metrics_text(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body")
}

/// A consumer that only reads `group`'s committed offsets.
pub fn group_watcher(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .expect("watcher")
}

/// SIGTERM, then wait for the exit.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// User plus system CPU seconds a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let f = stat_fields(pid);
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime: fields 14 and 15 of the line, 11 and 12 counted from 0 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Minor page faults of a process so far: field 10 of the line, 7 counted from 0 after the
/// name (`minflt`).
pub fn minor_faults(pid: u32) -> u64 {
    stat_fields(pid)
        .get(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The fields of /proc/<pid>/stat after the command name, which is in parentheses and may
/// hold spaces; none once the process is gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().map(str::to_owned).collect()
}

/// The most resident memory a process has had so far, in MiB (`VmHWM` in /proc).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Sum of the high watermarks of `topic`'s partitions.
pub fn end_offsets(c: &BaseConsumer, topic: &str) -> i64 {
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    md.topics()
        .iter()
        .flat_map(|t| t.partitions())
        .filter_map(|p| {
            c.fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .ok()
                .map(|(_, high)| high)
        })
        .sum()
}

/// The latest value of every key of `topic`, read from the start to its current end.
pub fn latest_values(topic: &str) -> std::collections::HashMap<String, Vec<u8>> {
    use rdkafka::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "bench-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    // Partitions still to read, with their end.
    let mut ends = std::collections::HashMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
            .expect("watermarks");
        if high > 0 {
            ends.insert(p.id(), high);
        }
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.insert(key, m.payload().unwrap_or_default().to_vec());
            }
            // The last offsets of a transactional topic are commit markers, never delivered:
            // the position says when a partition is read.
            _ => {
                if let Ok(pos) = c.position() {
                    for e in pos.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(ends.is_empty(), "{topic} not read to its end within 120 s");
    out
}
