//! End to end from the broker: the deals service's records/s next to a bare rdkafka consumer
//! reading the same topic in the same run and, with `--peer`, next to a Kafka Streams
//! application that computes the same per-rep numbers (`benches/streams-peer`), whose results
//! are checked against the service's.
//!
//! Needs a broker (`scripts/kafka.sh start`) and release binaries; the peer is built with Maven:
//! `cargo build --release --bins && mvn -q -B -f benches/streams-peer/pom.xml package
//! dependency:copy-dependencies && target/release/e2e-throughput 1000000 --peer`

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal::Decimal;
use salespulse_bench::broker::{
    bootstrap, committed, cpu_seconds, create_topic, delete_topics_of, end_offsets, group_watcher,
    latest_values, metrics_text, minor_faults, peak_rss_mib, produce_all, produce_roster,
    start_deals,
};
use salespulse_bench::deal_records;

/// How long a run may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(900);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let with_peer = args.iter().any(|a| a == "--peer");
    let suffix = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp());
    let topic = format!("bench.{suffix}.deals");
    create_topic(&topic).await;

    // 29 days, so that every close lies in the 30-day window the numbers are compared in.
    let now = chrono::Utc::now().timestamp_millis();
    let recs = deal_records(n, 200_000, 1_000, 29 * 86_400_000, now, false, 11);
    let t = Instant::now();
    produce_all(&topic, &recs);
    println!(
        "produced {n} JSON deal records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(recs);

    let bare = bare_consumer(&topic, &suffix, n);
    println!("bare rdkafka consumer:  {bare:>10.0} records/s");

    // Only reps on the roster have rep series: 1,000 reps in 10 teams.
    let roster = format!("bench.{suffix}.roster");
    create_topic(&roster).await;
    produce_roster(&roster, 1_000, 10);

    let port = 19_500 + (std::process::id() % 400) as u16;
    let group = format!("bench-{suffix}");
    let child = start_deals(&suffix, &topic, port, &group, &[]);
    let (svc, child) = measure(child, &group, &topic, None, n).await;
    let board = scrape(port).await;
    stop(child);
    report(
        "deals service (decode, aggregate, dead letters, publish)",
        &svc,
    );
    let published = end_offsets(&group_watcher(&group), &format!("bench.{suffix}.metrics"));
    println!(
        "  published {published} records to its metrics topic ({:.2} per input record)",
        published as f64 / n as f64
    );
    println!("ratio service / bare consumer: {:.2}", svc.rate / bare);

    if !with_peer {
        delete_topics_of(&suffix).await;
        return;
    }
    let app = format!("bench-peer-{suffix}");
    let out = format!("bench.{suffix}.peer-reps");
    create_topic(&out).await;
    let child = start_peer(&topic, &app, &out);
    let (peer, child) = measure(child, &app, &topic, Some(&app), n).await;
    stop(child);
    report(
        "Kafka Streams peer (latest deal, by rep, with retraction)",
        &peer,
    );
    println!(
        "per CPU-second, service / peer: {:.1}; records/s, service / peer: {:.1}",
        svc.per_cpu_second() / peer.per_cpu_second(),
        svc.rate / peer.rate
    );
    compare(&board, &peer_totals(&out));
    delete_topics_of(&suffix).await;
}

/// A bare consumer: polls every message and touches its payload, nothing else.
fn bare_consumer(topic: &str, suffix: &str, n: usize) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("bench-bare-{suffix}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
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
    assert!(bytes > 0);
    n as f64 / t.elapsed().as_secs_f64()
}

/// What one consumer of the topic did, from its process's start until its committed offsets
/// reached the end: start-up included, as the bare consumer's figure includes its connecting.
/// (A service that works off the whole backlog before its first commit leaves no span between
/// a first and a last commit to measure, so the rate is not taken between commits.)
struct Run {
    rate: f64,
    records: f64,
    wall: f64,
    cpu: f64,
    /// Cores busy over the run.
    busy: f64,
    peak_mib: f64,
    /// Pages the process faulted in: memory touched for the first time, or again after the
    /// allocator gave it back.
    faults: u64,
}

impl Run {
    fn per_cpu_second(&self) -> f64 {
        self.records / self.cpu.max(1e-9)
    }
}

/// Follows `group`'s committed offsets on `topic` until they reach `n` (and, for a Kafka
/// Streams application, until its repartition topics are consumed too). Progress is read from
/// the commits, not from the process, so the run ends once the last records are committed.
async fn measure(
    mut child: Child,
    group: &str,
    topic: &str,
    internal_prefix: Option<&str>,
    n: usize,
) -> (Run, Child) {
    let spawned = Instant::now();
    let watcher = group_watcher(group);
    let deadline = Instant::now() + RUN_LIMIT;
    let (end, total) = loop {
        assert!(Instant::now() < deadline, "{group} did not finish in time");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{group} exited early: {status}");
        }
        let c = committed(&watcher, topic) as f64;
        if c >= n as f64 && internal_prefix.is_none_or(|p| internal_consumed(&watcher, p)) {
            break (Instant::now(), c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = cpu_seconds(child.id());
    let wall = end.duration_since(spawned).as_secs_f64().max(1e-9);
    let run = Run {
        rate: total / wall,
        records: total,
        wall,
        cpu,
        busy: cpu / wall,
        peak_mib: peak_rss_mib(child.id()),
        faults: minor_faults(child.id()),
    };
    (run, child)
}

/// Whether every repartition topic of a Kafka Streams application is consumed to its end.
fn internal_consumed(c: &BaseConsumer, app: &str) -> bool {
    let Ok(md) = c.fetch_metadata(None, Duration::from_secs(5)) else {
        return false;
    };
    let internal: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|t| t.starts_with(app) && t.ends_with("-repartition"))
        .collect();
    !internal.is_empty()
        && internal.iter().all(|t| {
            let end = end_offsets(c, t);
            end > 0 && committed(c, t) >= end
        })
}

fn report(what: &str, r: &Run) {
    println!("{what}: {:>10.0} records/s", r.rate);
    println!(
        "  CPU {:.1} s in all, {:.0} records per CPU-second; {:.2} cores busy over the {:.1} s from its start; peak RSS {:.0} MiB; {} page faults",
        r.cpu,
        r.per_cpu_second(),
        r.busy,
        r.wall,
        r.peak_mib,
        r.faults
    );
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn start_peer(topic: &str, app: &str, out: &str) -> Child {
    let dir = "benches/streams-peer/target";
    let jar = format!("{dir}/streams-peer-1.jar");
    assert!(
        std::path::Path::new(&jar).exists(),
        "{jar} missing: mvn -q -B -f benches/streams-peer/pom.xml package dependency:copy-dependencies"
    );
    Command::new("java")
        .args(["-cp", &format!("{jar}:{dir}/libs/*")])
        .arg("io.salespulse.bench.DealsPeer")
        .args([&bootstrap(), topic, app, out])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("java")
}

/// A rep's numbers, in cents of the reporting currency; weighted pipeline in millionths.
#[derive(Debug, Default, PartialEq, Clone, Copy)]
struct RepNumbers {
    won: i64,
    won_cents: i64,
    lost: i64,
    open_cents: i64,
    weighted_millionths: i64,
}

/// The service's per-rep numbers from its `/metrics`: wins and losses of the last 30 days
/// (every record of the run lies in them), open pipeline summed over the stages.
async fn scrape(port: u16) -> HashMap<String, RepNumbers> {
    let text = metrics_text(port).await;
    let mut reps: HashMap<String, RepNumbers> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("sales_rep_")) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, ""));
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches(['"', '}']))
        };
        let (Some(rep), Ok(v)) = (label("rep"), Decimal::from_str(value)) else {
            continue;
        };
        let in_30d = label("window") == Some("30d");
        let cents = (v * Decimal::ONE_HUNDRED)
            .round()
            .try_into()
            .unwrap_or(0i64);
        let whole: i64 = v.round().try_into().unwrap_or(0);
        let e = reps.entry(rep.to_owned()).or_default();
        match name {
            "sales_rep_deals_won" if in_30d => e.won = whole,
            "sales_rep_bookings" if in_30d => e.won_cents = cents,
            "sales_rep_deals_lost" if in_30d => e.lost = whole,
            "sales_rep_open_pipeline" => e.open_cents += cents,
            "sales_rep_weighted_pipeline" => {
                e.weighted_millionths = (v * Decimal::from(1_000_000))
                    .round()
                    .try_into()
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    let sample: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("deals_won"))
        .take(3)
        .collect();
    assert!(
        reps.values().any(|r| *r != RepNumbers::default()),
        "no rep's numbers on /metrics; for example {sample:?}"
    );
    reps
}

fn peer_totals(out: &str) -> HashMap<String, RepNumbers> {
    latest_values(out)
        .into_iter()
        .map(|(rep, v)| {
            let j: serde_json::Value = serde_json::from_slice(&v).expect("peer output is JSON");
            let n = |k: &str| j[k].as_i64().unwrap_or_default();
            let totals = RepNumbers {
                won: n("won"),
                won_cents: n("won_cents"),
                lost: n("lost"),
                open_cents: n("open_cents"),
                // cents × basis points = 10^-6 units.
                weighted_millionths: n("weighted_cents_bp"),
            };
            (rep, totals)
        })
        .collect()
}

/// Every rep's numbers must agree: each side checks the other.
fn compare(service: &HashMap<String, RepNumbers>, peer: &HashMap<String, RepNumbers>) {
    let zero = RepNumbers::default();
    let mut reps: Vec<&String> = service.keys().chain(peer.keys()).collect();
    reps.sort();
    reps.dedup();
    let mut differ = 0;
    for rep in &reps {
        let s = service.get(*rep).unwrap_or(&zero);
        let p = peer.get(*rep).unwrap_or(&zero);
        // The service publishes the weighted pipeline to the cent.
        let weighted_close = (s.weighted_millionths - p.weighted_millionths).abs() <= 5_000;
        let same = RepNumbers {
            weighted_millionths: 0,
            ..*s
        } == RepNumbers {
            weighted_millionths: 0,
            ..*p
        };
        if !(same && weighted_close) {
            differ += 1;
            if differ <= 5 {
                println!("  {rep}: service {s:?}, peer {p:?}");
            }
        }
    }
    let won: i64 = peer.values().map(|p| p.won).sum();
    println!(
        "service and peer agree on {} of {} reps ({won} deals won in all)",
        reps.len() - differ,
        reps.len()
    );
    assert_eq!(differ, 0, "the service and the peer disagree");
}
