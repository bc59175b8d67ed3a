//! Fencing: the leading deals instance is paused (SIGSTOP) while records flow, past its
//! session timeout, until the other instance has taken every slot; then it is woken
//! (SIGCONT). Whatever it produces after waking — it still believes it leads, and it reads the
//! records the other instance handled meanwhile — must reach no topic: every rejected record
//! is dead-lettered exactly once, every celebration announced once, and the metrics topic and
//! `/metrics` equal a clean run. It runs twice: in the default mode (the leader is paused)
//! and with the instances dividing the input (`divide_input = true`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use salespulse_e2e::*;

const RECORDS: u64 = 30_000;

fn gauge(text: &str, family: &str) -> f64 {
    parse_metrics(text)
        .into_iter()
        .find(|(k, _)| k.split('{').next() == Some(family))
        .map_or(f64::NAN, |(_, v)| v)
}

fn signal(s: &Service, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &s.child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {}", s.child.id());
}

async fn business_equal(instances: &[&Service], clean: &Service) -> (usize, Vec<String>) {
    let mut union: BTreeMap<String, f64> = BTreeMap::new();
    for s in instances {
        if let Ok(r) = reqwest::get(s.url("/metrics")).await {
            if let Ok(text) = r.text().await {
                union.extend(business(&text));
            }
        }
    }
    let diffs = board_diffs(&union, &business(&clean.metrics().await));
    (union.len(), diffs)
}

/// The two tests share the machine's two cores: one runs at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_gets_nothing_into_any_topic_after_it_wakes() {
    let _one = ONE_AT_A_TIME.lock().await;
    paused_instance(false).await;
}

/// The same with the instances dividing the input: the paused one held input partitions and
/// slots, which the other takes over. On waking it may find its producer fenced, its commit
/// refused, or its partitions revoked (the open transaction aborted as they are given up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_in_divided_ingest_gets_nothing_into_any_topic() {
    let _one = ONE_AT_A_TIME.lock().await;
    paused_instance(true).await;
}

/// Whether an instance holds every slot (and, in the default mode, leads).
fn holds_all(text: &str, divided: bool) -> bool {
    gauge(text, "salespulse_owned_slots") == 12.0
        && (divided || gauge(text, "salespulse_leader") == 1.0)
}

async fn paused_instance(divided: bool) {
    require_broker();
    let topics = Topics::unique(if divided {
        "fencing-divided"
    } else {
        "fencing"
    });
    let group = format!("g-{}", topics.suffix);
    let clean_topics = topics.clean();
    clear_service_env("deals");
    let mut clean = Service::start(
        "deals",
        &clean_topics,
        free_port(),
        &format!("{group}-clean"),
    );
    clean.wait_ready(Duration::from_secs(60)).await;

    if divided {
        set_service_env("deals", "SALESPULSE_DEALS__DIVIDE_INPUT", "true");
    }
    let mut a = Service::start("deals", &topics, free_port(), &group);
    a.wait_ready(Duration::from_secs(60)).await;
    let mut b = Service::start("deals", &topics, free_port(), &group);
    b.wait_ready(Duration::from_secs(60)).await;
    // Both hold slots, one leads.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (zombie, survivor) = loop {
        let (ta, tb) = (a.metrics().await, b.metrics().await);
        let slots = (
            gauge(&ta, "salespulse_owned_slots"),
            gauge(&tb, "salespulse_owned_slots"),
        );
        let leads = (
            gauge(&ta, "salespulse_leader"),
            gauge(&tb, "salespulse_leader"),
        );
        if slots.0 > 0.0 && slots.1 > 0.0 && slots.0 + slots.1 == 12.0 {
            match leads {
                // In divided ingest no instance leads: either may be paused.
                _ if divided => break (a, b),
                (1.0, 0.0) => break (a, b),
                (0.0, 1.0) => break (b, a),
                _ => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "slots not spread: {slots:?}, leaders {leads:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (mut zombie, mut survivor) = (zombie, survivor);

    let mut sim = simulator(&topics)
        .args([
            "--seed",
            "11",
            "--rate",
            "2000",
            "--records",
            &RECORDS.to_string(),
        ])
        .args(["--backfill-days", "0", "--reps", "30", "--teams", "5"])
        .args(["--malformed-share", "0.01"])
        .spawn()
        .expect("simulator starts");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Paused past its session timeout (10 s) and its transaction timeout (10 s): the survivor
    // takes every slot and leads.
    signal(&zombie, "-STOP");
    let paused = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if holds_all(&survivor.metrics().await, divided) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor never took every slot"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let took_over_after = paused.elapsed();
    // Records the survivor handles while the zombie sleeps, which the zombie reads on waking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&zombie, "-CONT");
    let paused_for = paused.elapsed();

    simulator_done(&mut sim, &topics);
    zombie.wait_ready(Duration::from_secs(120)).await;
    survivor.wait_ready(Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let series = loop {
        let (n, diffs) = business_equal(&[&zombie, &survivor], &clean).await;
        if diffs.is_empty() {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "{} differences from the clean run:\n{}",
            diffs.len(),
            diffs
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The zombie noticed: its transaction was refused or its producer fenced.
    let log = std::fs::read_to_string(&zombie.log).unwrap_or_default();
    let aborted = log.matches("the open transaction was aborted").count();
    let fenced = log
        .matches("this instance was fenced; starting over")
        .count();
    assert!(
        aborted + fenced > 0,
        "the paused instance never had a transaction refused:\n{}",
        log_tail(&zombie.log)
    );

    // Exactly once on every topic.
    let deadline = Instant::now() + Duration::from_secs(60);
    let keys = loop {
        let (got, _, _) = board_of(&topics.metrics);
        let (want, _, _) = board_of(&clean_topics.metrics);
        if got == want {
            break got.len();
        }
        assert!(
            Instant::now() < deadline,
            "the metrics topics differ: {} vs {} keys{}",
            got.len(),
            want.len(),
            topic_diffs(&got, &want)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let dead = wait_same_dead_letters(
        &topics.deadletter,
        &clean_topics.deadletter,
        &[&topics.deals],
        Duration::from_secs(30),
    );
    assert!(dead > 0, "the stream had rejects to dead-letter");
    let wins = same_celebrations_once(&topics.celebrations, &clean_topics.celebrations);
    // What aborted transactions hold: visible only to a reader of uncommitted data.
    // Committed first: the service may still publish (a window moving), and what the later
    // uncommitted read finds then includes it.
    let committed: usize = [&topics.deadletter, &topics.metrics, &topics.celebrations]
        .iter()
        .map(|t| read_topic(t).len())
        .sum();
    let uncommitted: usize = [&topics.deadletter, &topics.metrics, &topics.celebrations]
        .iter()
        .map(|t| read_topic_as(t, "read_uncommitted").len())
        .sum();
    clear_service_env("deals");
    let mode = if divided {
        "divided ingest"
    } else {
        "default mode"
    };
    println!(
        "fencing ({mode}): {RECORDS} records; instance paused for {:.1} s (the other instance took every \
         slot after {:.1} s); on waking it had {aborted} transaction(s) aborted and was fenced \
         {fenced} time(s); {series} series equal to a clean run, metrics topic {keys} keys equal, \
         {} dead letters once each, {} celebrations once each; {} records of aborted \
         transactions on the output topics, none read committed",
        paused_for.as_secs_f64(),
        took_over_after.as_secs_f64(),
        dead,
        wins,
        uncommitted.saturating_sub(committed),
    );
}
