//! Fast restart: a service restores its state from the snapshot topic and replays only the
//! input after it. A start from the snapshot and a start that replays all history (snapshots
//! off) must show the same numbers; the first replays nothing, the second every record.

use std::time::{Duration, Instant};

use salespulse_e2e::*;

const RECORDS: u64 = 60_000;

fn gauge(text: &str, family: &str) -> f64 {
    parse_metrics(text)
        .into_iter()
        .find(|(k, _)| k.split('{').next() == Some(family))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{family} missing from /metrics"))
}

async fn start_timed(name: &str, topics: &Topics, group: &str) -> (Service, f64) {
    let t = Instant::now();
    let mut s = Service::start(name, topics, free_port(), group);
    s.wait_ready(Duration::from_secs(180)).await;
    (s, t.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_from_the_snapshot_equals_a_full_replay() {
    require_broker();
    let topics = Topics::unique("restore");
    let group = format!("g-{}", topics.suffix);
    // Thirty days of history, as fast as possible.
    let mut sim = simulator(&topics)
        .args(["--seed", "11", "--rate", "0"])
        .args(["--records", &RECORDS.to_string(), "--backfill-days", "30"])
        .args(["--backfill-rate", "400", "--reps", "60", "--teams", "5"])
        .spawn()
        .expect("simulator starts");
    simulator_done(&mut sim, &topics);

    // First run: processes the history live, then writes a snapshot at SIGTERM.
    for name in ["deals", "activities"] {
        let (mut s, _) = start_timed(name, &topics, &group).await;
        let t = if name == "deals" {
            &topics.deals
        } else {
            &topics.activities
        };
        wait_committed(&group, t, Duration::from_secs(120));
        assert!(s.terminate().success(), "{name} stopped cleanly");
    }

    let mut lines = Vec::new();
    for name in ["deals", "activities"] {
        // Snapshots off: the whole input is replayed. In a group of its own (with the same
        // committed offsets), so that the two instances do not divide the series between them.
        let topic = if name == "deals" {
            &topics.deals
        } else {
            &topics.activities
        };
        let replay_group = format!("{group}-replay");
        copy_committed(&group, &replay_group, topic);
        set_service_env(name, "SALESPULSE_DEALS__SNAPSHOT_INTERVAL_SECONDS", "0");
        set_service_env(
            name,
            "SALESPULSE_ACTIVITIES__SNAPSHOT_INTERVAL_SECONDS",
            "0",
        );
        let (replayed, replay_secs) = start_timed(name, &topics, &replay_group).await;
        clear_service_env(name);
        let (restored, snap_secs) = start_timed(name, &topics, &group).await;

        let r_text = replayed.metrics().await;
        let s_text = restored.metrics().await;
        let replayed_records = gauge(&r_text, "salespulse_restore_replayed_records");
        let snap_replayed = gauge(&s_text, "salespulse_restore_replayed_records");
        assert!(
            replayed_records > 0.0,
            "{name}: the full replay replayed nothing"
        );
        assert_eq!(
            snap_replayed, 0.0,
            "{name}: the snapshot start replayed input"
        );
        let log = std::fs::read_to_string(&restored.log).unwrap_or_default();
        assert!(
            log.contains("state loaded from snapshot"),
            "{name}: no snapshot was loaded"
        );

        let series = assert_same_boards(&[&restored], &[&replayed], name).await;
        assert!(series > 100, "{name}: only {series} series");
        lines.push(format!(
            "{name}: full replay of {replayed_records} records ready in {replay_secs:.1} s, \
             from the snapshot ({} bytes, 0 records replayed) in {snap_secs:.1} s; \
             {series} series equal, differences: 0",
            gauge(&s_text, "salespulse_snapshot_bytes").max(0.0)
        ));
    }
    println!("restore: {}", lines.join("; "));
}
