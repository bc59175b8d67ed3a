//! Kafka unreachable at start, then stopped and restarted under a running service, twice (the
//! second time in the middle of a stream): the service stays alive and not ready while the
//! cluster is away, says why, and ends with the numbers of a clean run.
//!
//! Uses a broker of its own (scripts/kafka.sh on other ports), so that stopping it disturbs no
//! other test.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeZone, Utc};
use salespulse_e2e::*;
use serde_json::json;

const PORT: u16 = 29292;
const STREAM: u64 = 30_000;

fn kafka(cmd: &str) {
    let status = Command::new(root().join("scripts/kafka.sh"))
        .arg(cmd)
        .env("KAFKA_PORT", PORT.to_string())
        .env("KAFKA_CONTROLLER_PORT", (PORT + 1).to_string())
        .env("KAFKA_SASL_PORT", (PORT + 2).to_string())
        .env("KAFKA_SSL_PORT", (PORT + 3).to_string())
        .status()
        .expect("scripts/kafka.sh runs");
    assert!(status.success(), "scripts/kafka.sh {cmd} failed");
}

/// Stops the test's own broker and removes its data, also when the test fails.
struct OwnBroker;

impl Drop for OwnBroker {
    fn drop(&mut self) {
        kafka("reset");
    }
}

fn rfc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn status(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

async fn bookings_today(svc: &Service) -> Option<f64> {
    parse_metrics(&svc.metrics().await)
        .get(&metric_key("sales_org_bookings", &[("window", "today")]))
        .copied()
}

/// Waits until the org's bookings today are `want`; returns how long that took.
async fn wait_bookings(svc: &Service, want: f64, within: Duration) -> Duration {
    let start = Instant::now();
    while bookings_today(svc).await != Some(want) {
        assert!(
            start.elapsed() < within,
            "bookings never reached {want} within {within:?}: {:?}\nthe service's log ends:\n{}\nthe broker's log ends:\n{}",
            bookings_today(svc).await,
            log_tail(&svc.log),
            log_tail(
                &std::env::var_os("SALESPULSE_CACHE")
                    .map_or_else(|| root().join(".cache"), std::path::PathBuf::from)
                    .join(format!("kafka/run-{PORT}/broker.log"))
            )
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_away_at_start_and_restarted_under_load() {
    kafka("reset");
    let _own = OwnBroker;
    let bootstrap = format!("127.0.0.1:{PORT}");
    std::env::set_var("KAFKA_BOOTSTRAP", &bootstrap);
    let topics = Topics::unique("unavailable");
    let port = free_port();
    let mut deals = Service::start("deals", &topics, port, "g-unavailable");

    // No broker yet: alive, not ready, and saying why.
    let log_path = deals.log.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("Kafka unavailable")
    {
        assert!(
            Instant::now() < deadline,
            "the log never says why the service is not ready"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        deals.child.try_wait().expect("status").is_none(),
        "the service stays up"
    );
    assert_eq!(status(&deals.url("/healthz")).await, Some(200));
    assert_eq!(status(&deals.url("/readyz")).await, Some(503));

    // The broker arrives: the service connects by itself.
    kafka("start");
    deals.wait_ready(Duration::from_secs(120)).await;
    let p = producer();
    let now = Utc::now().timestamp();
    let deal = |id: &str, amount: &str| {
        json!({"event_id": format!("e-{id}"), "deal_id": id, "rep_id": "rep-a", "stage": "closed_won",
            "amount": amount, "currency": "USD", "created_at": rfc(now - 600), "occurred_at": rfc(now - 60)})
        .to_string()
    };
    produce(
        &p,
        &topics.deals,
        Some("d1"),
        Some(deal("d1", "100").as_bytes()),
    )
    .await;
    wait_bookings(&deals, 100.0, Duration::from_secs(60)).await;

    // The broker stops and comes back; records produced after it returns are not lost, and
    // nothing is counted twice.
    kafka("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        deals.child.try_wait().expect("status").is_none(),
        "the service survives the broker"
    );
    kafka("start");
    let p = producer();
    produce(
        &p,
        &topics.deals,
        Some("d2"),
        Some(deal("d2", "250").as_bytes()),
    )
    .await;
    // After a broker restart the client reconnects with back-off and the broker recovers its
    // logs first: allow for both on a loaded machine.
    let after_restart = wait_bookings(&deals, 350.0, Duration::from_secs(150)).await;
    deals.wait_ready(Duration::from_secs(60)).await;

    // A stream, and the broker stopped and restarted in the middle of it.
    let mut sim = simulator(&topics)
        .args(["--seed", "5", "--rate", "3000"])
        .args(["--records", &STREAM.to_string(), "--backfill-days", "0"])
        // The records produced while the broker is away wait for it: its restart recovers
        // its logs first, which takes longer than the simulator's usual flush on a loaded
        // machine.
        .args(["--flush-seconds", "150"])
        .spawn()
        .expect("simulator starts");
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka("stop");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        deals.child.try_wait().expect("status").is_none(),
        "the service survives the broker going away mid-stream"
    );
    kafka("start");
    simulator_done(&mut sim, &topics);
    deals.wait_ready(Duration::from_secs(120)).await;
    wait_committed("g-unavailable", &topics.deals, Duration::from_secs(120));

    // A clean run over the same input, into topics of its own, shows the same numbers.
    let clean_topics = topics.clean();
    let mut clean = Service::start("deals", &clean_topics, free_port(), "g-unavailable-clean");
    clean.wait_ready(Duration::from_secs(120)).await;
    wait_committed(
        "g-unavailable-clean",
        &topics.deals,
        Duration::from_secs(120),
    );
    let series = assert_same_boards(&[&deals], &[&clean], "after the broker restart").await;
    println!(
        "unavailable: broker away at start (alive, not ready), then stopped and restarted: 350 booked {:.1} s after the restart; \
         broker stopped for 4 s in the middle of a {STREAM}-record stream: {series} series equal to a clean run, differences: 0",
        after_restart.as_secs_f64()
    );
}
