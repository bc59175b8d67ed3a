//! Crashes during a stream: the deals and activities services are killed with SIGKILL at
//! random moments, at least ten times, while the simulator streams 200,000 records, and
//! restarted each time. At the end their numbers must equal those of a clean run over the same
//! input, the metrics topic must rebuild the same board, and no output record may repeat.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use salespulse_e2e::*;

const RECORDS: u64 = 200_000;
const KILLS: usize = 10;

fn committed_all(group: &str, topics: &Topics) {
    for t in [&topics.deals, &topics.activities] {
        wait_committed(group, t, Duration::from_secs(120));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_stream_changes_no_number() {
    require_broker();
    let topics = Topics::unique("faults");
    let group = format!("g-{}", topics.suffix);
    let (dport, aport) = (free_port(), free_port());
    // Snapshots every second, so that kills land before, between and during them.
    set_service_env("deals", "SALESPULSE_DEALS__SNAPSHOT_INTERVAL_SECONDS", "1");
    set_service_env(
        "activities",
        "SALESPULSE_ACTIVITIES__SNAPSHOT_INTERVAL_SECONDS",
        "1",
    );
    let mut deals = Service::start("deals", &topics, dport, &group);
    let mut acts = Service::start("activities", &topics, aport, &group);
    deals.wait_ready(Duration::from_secs(60)).await;
    acts.wait_ready(Duration::from_secs(60)).await;

    // A stream of RECORDS records over about half a minute.
    let mut sim = simulator(&topics)
        .args(["--seed", "7", "--rate", "8000"])
        .args(["--records", &RECORDS.to_string(), "--backfill-days", "0"])
        .spawn()
        .expect("simulator starts");
    let started = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while kills < KILLS {
        assert!(Instant::now() < deadline, "only {kills} kills in time");
        tokio::time::sleep(Duration::from_millis(800 + rand() % 1700)).await;
        // Alternate which service dies, sometimes both at once.
        match rand() % 3 {
            0 => {
                deals.kill();
                deals = Service::start("deals", &topics, dport, &group);
            }
            1 => {
                acts.kill();
                acts = Service::start("activities", &topics, aport, &group);
            }
            _ => {
                deals.kill();
                acts.kill();
                deals = Service::start("deals", &topics, dport, &group);
                acts = Service::start("activities", &topics, aport, &group);
            }
        }
        kills += 1;
    }
    simulator_done(&mut sim, &topics);
    let stream_secs = started.elapsed().as_secs_f64();
    deals.wait_ready(Duration::from_secs(120)).await;
    acts.wait_ready(Duration::from_secs(120)).await;
    committed_all(&group, &topics);

    // A clean run over the same input, into its own metrics topic.
    let clean_topics = topics.clean();
    let clean_group = format!("{group}-clean");
    clear_service_env("deals");
    clear_service_env("activities");
    let (cdport, caport) = (free_port(), free_port());
    let mut clean_deals = Service::start("deals", &clean_topics, cdport, &clean_group);
    let mut clean_acts = Service::start("activities", &clean_topics, caport, &clean_group);
    clean_deals.wait_ready(Duration::from_secs(120)).await;
    clean_acts.wait_ready(Duration::from_secs(120)).await;
    committed_all(&clean_group, &clean_topics);

    let series = assert_same_boards(
        &[&deals, &acts],
        &[&clean_deals, &clean_acts],
        &format!("after {kills} kills"),
    )
    .await;

    // The metrics topics rebuild the same board, and the crashed run repeated no value.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (repeats, published) = loop {
        let (crashed, repeats, n) = board_of(&topics.metrics);
        let (clean, _, _) = board_of(&clean_topics.metrics);
        if crashed == clean {
            break (repeats, n);
        }
        assert!(
            Instant::now() < deadline,
            "the metrics topics differ: {} vs {} keys",
            crashed.len(),
            clean.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(
        repeats, 0,
        "records on the metrics topic that repeat their key's previous value"
    );
    let wins: Vec<String> = read_topic(&topics.celebrations)
        .into_iter()
        .map(|r| String::from_utf8(r.key.unwrap_or_default()).expect("key"))
        .collect();
    let unique: HashSet<&String> = wins.iter().collect();
    assert_eq!(
        unique.len(),
        wins.len(),
        "a celebration was announced twice"
    );
    let clean_wins: HashSet<String> = read_topic(&clean_topics.celebrations)
        .into_iter()
        .map(|r| String::from_utf8(r.key.unwrap_or_default()).expect("key"))
        .collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<_>>(),
        clean_wins,
        "the same celebrations"
    );
    println!(
        "faults: 1 stream of {RECORDS} records over {stream_secs:.0} s, {kills} SIGKILLs and restarts; \
         {series} series equal to a clean run, {published} metric records with 0 repeats, \
         {} celebrations once each; differences: 0",
        wins.len()
    );
}
