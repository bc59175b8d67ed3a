//! Scale-out of the deals service through the broker: the CPU-seconds one instance spends on
//! 1,000,000 records against three instances of one group in divided ingest
//! (`divide_input = true`) over the same records, with the records each instance read from the
//! input and the deal states each holds.
//!
//! Each run has its own topics. Its instances are started and ready before the records are
//! produced, so that no start-up or rebalance is in the figures: CPU is counted from the first
//! record produced until every input record is committed and the instances are idle again (the
//! mergers have taken every contribution).
//!
//! Needs a broker (`scripts/kafka.sh start`) and release binaries:
//! `cargo build --release --bins && target/release/scale [records]`

use std::process::Child;
use std::time::{Duration, Instant};

use salespulse_bench::broker::{
    committed, cpu_seconds, create_topic, delete_topics_of, group_watcher, metrics_text,
    produce_all, produce_roster, start_deals, terminate,
};
use salespulse_bench::deal_records;

/// How long a run may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// One run's instances and what they did.
struct Outcome {
    cpu: Vec<f64>,
    read: Vec<f64>,
    deals_held: Vec<f64>,
    wall: f64,
    /// Cores used together while idle before the records, and the seconds the wait for the
    /// instances to become idle again took after the last commit.
    idle: f64,
    settled_in: f64,
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let now = chrono::Utc::now().timestamp_millis();
    let recs = deal_records(n, 200_000, 1_000, 29 * 86_400_000, now, false, 11);
    println!("{n} JSON deal records, 200,000 deals, 1,000 reps in 10 teams, 3 input partitions");
    let base = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp());
    let runs = [
        ("one instance, default mode", 1, false),
        ("one instance, divided ingest", 1, true),
        ("three instances, divided ingest", 3, true),
    ];
    let mut outcomes = Vec::new();
    for (i, (label, instances, divided)) in runs.iter().enumerate() {
        let o = run(&format!("{base}-{i}"), &recs, *instances, *divided).await;
        report(label, &o);
        outcomes.push(o);
    }
    let cpu = |o: &Outcome| o.cpu.iter().sum::<f64>();
    let (single, one, three) = (&outcomes[0], &outcomes[1], &outcomes[2]);
    println!(
        "CPU-seconds, three instances against one: {:.2}x one divided instance's, {:.2}x one default-mode instance's",
        cpu(three) / cpu(one),
        cpu(three) / cpu(single)
    );
    let held: f64 = one.deals_held.iter().sum();
    println!(
        "deal states per instance against one instance's: {:?}",
        three
            .deals_held
            .iter()
            .map(|d| format!("{:.2}", d / held))
            .collect::<Vec<_>>()
    );
    delete_topics_of(&base).await;
}

async fn run(
    suffix: &str,
    recs: &[(Vec<u8>, Vec<u8>)],
    instances: usize,
    divided: bool,
) -> Outcome {
    let topic = format!("bench.{suffix}.deals");
    create_topic(&topic).await;
    let roster = format!("bench.{suffix}.roster");
    create_topic(&roster).await;
    produce_roster(&roster, 1_000, 10);

    let group = format!("bench-scale-{suffix}");
    let env: &[(&str, &str)] = match divided {
        true => &[("SALESPULSE_DEALS__DIVIDE_INPUT", "true")],
        false => &[],
    };
    let first_port = 19_000 + (std::process::id() % 300) as u16 * 3;
    let ports: Vec<u16> = (0..instances as u16).map(|i| first_port + i).collect();
    let mut children: Vec<Child> = ports
        .iter()
        .map(|p| start_deals(suffix, &topic, *p, &group, env))
        .collect();
    wait_ready(&ports).await;
    let idle = idle_rate(&children).await;

    let cpu_before: Vec<f64> = children.iter().map(|c| cpu_seconds(c.id())).collect();
    let began = Instant::now();
    produce_all(&topic, recs);
    let watcher = match divided {
        true => group_watcher(&format!("{group}-deals-divided")),
        false => group_watcher(&group),
    };
    let deadline = began + RUN_LIMIT;
    while committed(&watcher, &topic) < recs.len() as i64 {
        assert!(Instant::now() < deadline, "{group} did not finish in time");
        for c in &mut children {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("an instance of {group} exited: {status}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled_in = settle(&children, idle).await;
    let wall = began.elapsed().as_secs_f64();
    let cpu: Vec<f64> = children
        .iter()
        .zip(&cpu_before)
        .map(|(c, b)| cpu_seconds(c.id()) - b)
        .collect();
    let mut read = Vec::new();
    let mut deals_held = Vec::new();
    for p in &ports {
        let text = metrics_text(*p).await;
        read.push(sum_of(
            &text,
            "salespulse_events_total{",
            &format!("topic=\"{topic}\""),
        ));
        deals_held.push(sum_of(&text, "salespulse_state_entries{", "kind=\"deals\""));
    }
    for c in &mut children {
        terminate(c);
    }
    Outcome {
        cpu,
        read,
        deals_held,
        wall,
        idle,
        settled_in,
    }
}

async fn wait_ready(ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    // Ready twice in a row, a second apart: the group has settled.
    let mut settled = 0;
    while settled < 2 {
        assert!(
            Instant::now() < deadline,
            "instances not ready within 120 s"
        );
        let mut all = true;
        for p in ports {
            let url = format!("http://127.0.0.1:{p}/readyz");
            all &= reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success());
        }
        settled = if all { settled + 1 } else { 0 };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Cores the instances use together while they wait for records (their ticks, lag probes and
/// group heartbeats), over three seconds.
async fn idle_rate(children: &[Child]) -> f64 {
    let total = || children.iter().map(|c| cpu_seconds(c.id())).sum::<f64>();
    let before = total();
    tokio::time::sleep(Duration::from_secs(3)).await;
    (total() - before) / 3.0
}

/// Waits (up to 30 s) until the instances together use less than 2 % of a core over a second
/// above what they used idle before the records came: what they were sent is taken. (Three
/// idle instances use about three times what one does, so a fixed bar can be out of their
/// reach, and the wait would then count up to 30 s of idling as work.) Returns the seconds
/// waited.
async fn settle(children: &[Child], idle: f64) -> f64 {
    let total = || children.iter().map(|c| cpu_seconds(c.id())).sum::<f64>();
    let began = Instant::now();
    let deadline = began + Duration::from_secs(30);
    let mut last = total();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total();
        if now - last < idle + 0.02 {
            break;
        }
        last = now;
    }
    began.elapsed().as_secs_f64()
}

/// The sum of the samples of a family whose labels contain `label`.
fn sum_of(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn report(label: &str, o: &Outcome) {
    let fmt = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    println!(
        "{label}: CPU {} = {:.2} s over {:.1} s; input records read {} = {:.0}; deal states held {}",
        fmt(&o.cpu, 2),
        o.cpu.iter().sum::<f64>(),
        o.wall,
        fmt(&o.read, 0),
        o.read.iter().sum::<f64>(),
        fmt(&o.deals_held, 0),
    );
    println!(
        "  idle before the records: {:.3} cores together; idle again {:.1} s after the last commit",
        o.idle, o.settled_in
    );
}
