//! Crashes during a stream: instances of the deals and activities services (three of each, in
//! one group) and the targets service are killed with SIGKILL at random moments, sixteen times,
//! while the simulator streams 200,000 records, and restarted each time. At the end their numbers must equal those of a clean run over the same
//! input, the metrics topic must rebuild the same board, and no output record may repeat: no
//! celebration twice, no alert announcing the state it is already in. It runs twice: with
//! every instance reading all input (the default), and with the instances of each service
//! dividing the input between them (`divide_input = true`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use salespulse_e2e::*;

const RECORDS: u64 = 200_000;
const KILLS: usize = 16;
/// Instances of the deals and of the activities service, in one group each.
const INSTANCES: usize = 3;

/// The targets service's series that depend on the inputs only, not on the instant they are
/// computed at (expected-to-date, pace and projection move with the clock).
fn settled_targets(text: &str) -> BTreeMap<String, f64> {
    business(text)
        .into_iter()
        .filter(|(k, _)| {
            let family = k.split('{').next().unwrap_or_default();
            !["_expected_to_date", "_pace_ratio", "_projected"]
                .iter()
                .any(|s| family.ends_with(s))
        })
        .collect()
}

/// Imports the sample targets of the simulated org onto `topics.targets`.
fn import_sample_targets(topics: &Topics) {
    let csv = std::env::temp_dir().join(format!("{}-targets.csv", topics.suffix));
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/sample-targets.sh"))
        .output()
        .expect("sample-targets.sh runs");
    assert!(out.status.success(), "sample-targets.sh failed");
    std::fs::write(&csv, &out.stdout).expect("csv written");
    let out = targets_import(topics, &csv).output().expect("import runs");
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the group has committed every input record; instances that divide the input
/// commit under a group per service (`<group>-<service>-divided`).
fn committed_all(group: &str, topics: &Topics, divided: bool) {
    for (service, t) in [("deals", &topics.deals), ("activities", &topics.activities)] {
        let group = match divided {
            true => format!("{group}-{service}-divided"),
            false => group.to_owned(),
        };
        wait_committed(&group, t, Duration::from_secs(120));
    }
}

/// The two tests share the machine's two cores: one runs at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_stream_changes_no_number() {
    let _one = ONE_AT_A_TIME.lock().await;
    kills_during_a_stream(false).await;
}

/// The same, with the deals and activities instances dividing the input between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_divided_ingest_changes_no_number() {
    let _one = ONE_AT_A_TIME.lock().await;
    kills_during_a_stream(true).await;
}

async fn kills_during_a_stream(divided: bool) {
    require_broker();
    let topics = Topics::unique(if divided { "faults-divided" } else { "faults" });
    let group = format!("g-{}", topics.suffix);
    let tport = free_port();
    for name in ["deals", "activities", "targets"] {
        clear_service_env(name);
    }
    if divided {
        set_service_env("deals", "SALESPULSE_DEALS__DIVIDE_INPUT", "true");
        set_service_env("activities", "SALESPULSE_ACTIVITIES__DIVIDE_INPUT", "true");
    }
    // Alerts without delay, so that they fire and resolve while the kills land.
    set_service_env("targets", "SALESPULSE_ALERTS__HOLD_SECONDS", "0");
    set_service_env("targets", "SALESPULSE_ALERTS__MIN_ELAPSED", "0");
    // Snapshots every second, so that kills land before, between and during them.
    set_service_env("deals", "SALESPULSE_DEALS__SNAPSHOT_INTERVAL_SECONDS", "1");
    set_service_env(
        "activities",
        "SALESPULSE_ACTIVITIES__SNAPSHOT_INTERVAL_SECONDS",
        "1",
    );
    let start = |name: &str, n: usize| -> Vec<Service> {
        (0..n)
            .map(|_| Service::start(name, &topics, free_port(), &group))
            .collect()
    };
    let mut pools = [start("deals", INSTANCES), start("activities", INSTANCES)];
    let mut targets = Service::start("targets", &topics, tport, &group);
    for s in pools.iter_mut().flatten() {
        s.wait_ready(Duration::from_secs(60)).await;
    }
    targets.wait_ready(Duration::from_secs(60)).await;
    import_sample_targets(&topics);

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
    // A bad target record before each round: each is dead-lettered once, however the targets
    // service's kills fall between reading it and committing past it.
    let p = producer();
    let mut bad_targets = 0;
    // Kills of the deals, activities and targets services.
    let mut killed = [0usize; 3];
    let deadline = Instant::now() + Duration::from_secs(180);
    while kills < KILLS {
        assert!(Instant::now() < deadline, "only {kills} kills in time");
        let bad = format!(
            r#"{{"scope":"rep","id":"rep-bad-{kills}","metric":"bookings","period":"2026-Q9","value":1}}"#
        );
        let key = format!("rep/rep-bad-{kills}/bookings/x");
        produce(&p, &topics.targets, Some(&key), Some(bad.as_bytes())).await;
        bad_targets += 1;
        tokio::time::sleep(Duration::from_millis(800 + rand() % 1700)).await;
        // A random instance of a random service dies (a deals and an activities instance at
        // once every fourth round), and a new one starts on its port.
        let mut kill_one = |pool: usize, r: u64| {
            let i = usize::try_from(r).unwrap_or_default() % INSTANCES;
            let s = &mut pools[pool][i];
            let (name, port) = (s.name.clone(), s.port);
            s.kill();
            *s = Service::start(&name, &topics, port, &group);
            killed[pool] += 1;
        };
        match rand() % 4 {
            0 => kill_one(0, rand()),
            1 => kill_one(1, rand()),
            2 => {
                targets.kill();
                targets = Service::start("targets", &topics, tport, &group);
                killed[2] += 1;
            }
            _ => {
                kill_one(0, rand());
                kill_one(1, rand());
            }
        }
        kills += 1;
    }
    assert!(
        killed.iter().all(|n| *n > 0),
        "every service is killed at least once: {killed:?}"
    );
    simulator_done(&mut sim, &topics);
    let stream_secs = started.elapsed().as_secs_f64();
    for s in pools.iter_mut().flatten() {
        s.wait_ready(Duration::from_secs(120)).await;
    }
    targets.wait_ready(Duration::from_secs(120)).await;
    committed_all(&group, &topics, divided);

    // A clean run over the same input, into its own metrics topic.
    let clean_topics = topics.clean();
    let clean_group = format!("{group}-clean");
    clear_service_env("deals");
    clear_service_env("activities");
    let (cdport, caport, ctport) = (free_port(), free_port(), free_port());
    let mut clean_deals = Service::start("deals", &clean_topics, cdport, &clean_group);
    let mut clean_acts = Service::start("activities", &clean_topics, caport, &clean_group);
    let mut clean_targets = Service::start("targets", &clean_topics, ctport, &clean_group);
    clean_deals.wait_ready(Duration::from_secs(120)).await;
    clean_acts.wait_ready(Duration::from_secs(120)).await;
    clean_targets.wait_ready(Duration::from_secs(120)).await;
    committed_all(&clean_group, &clean_topics, false);

    let series = assert_same_boards(
        &pools.iter().flatten().collect::<Vec<_>>(),
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
            "the metrics topics differ: {} vs {} keys{}",
            crashed.len(),
            clean.len(),
            topic_diffs(&crashed, &clean)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(
        repeats, 0,
        "records on the metrics topic that repeat their key's previous value"
    );
    // The targets service: the same board as a clean one reading the same two topics.
    let deadline = Instant::now() + Duration::from_secs(60);
    let target_series =
        loop {
            let got = settled_targets(&targets.metrics().await);
            let diffs = board_diffs(&got, &settled_targets(&clean_targets.metrics().await));
            if diffs.is_empty() && !got.is_empty() {
                break got.len();
            }
            assert!(
            Instant::now() < deadline,
            "the targets service differs from a clean run after the kills ({} differences):\n{}",
            diffs.len(),
            diffs.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };

    // Every celebration once; the deals service's big wins exactly those of the clean run (the
    // targets service's milestones and new leaders depend on the order the numbers moved in).
    let wins = celebrations_once(&topics.celebrations);
    let big = |keys: &BTreeSet<String>| -> HashSet<String> {
        keys.iter()
            .filter(|k| k.starts_with("big_win/"))
            .cloned()
            .collect()
    };
    let big_wins = big(&wins);
    let clean_wins = big(&celebrations_once(&clean_topics.celebrations));
    let only_crashed: Vec<&String> = big_wins.difference(&clean_wins).collect();
    let only_clean: Vec<&String> = clean_wins.difference(&big_wins).collect();
    assert!(
        only_crashed.is_empty() && only_clean.is_empty(),
        "the same big wins: {} against {} in the clean run; only after the kills: {only_crashed:?}; \
         only in the clean run: {only_clean:?}",
        big_wins.len(),
        clean_wins.len()
    );
    // Every alert alternates: fired, resolved, fired... never the state it is already in.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let alerts = read_topic(&topics.alerts);
    for r in &alerts {
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).expect("key");
        let v: serde_json::Value =
            serde_json::from_slice(r.value.as_deref().unwrap_or_default()).expect("alert JSON");
        let state = v["state"].as_str().unwrap_or_default().to_owned();
        let before = last.insert(key.clone(), state.clone());
        let expected = match before.as_deref() {
            None | Some("resolved") => "firing",
            _ => "resolved",
        };
        assert_eq!(state, expected, "alert {key} after {before:?}");
    }
    // Every rejected input record dead-lettered once, as in the clean run.
    let inputs = [topics.deals.as_str(), topics.activities.as_str()];
    let dead = wait_same_dead_letters(
        &topics.deadletter,
        &clean_topics.deadletter,
        &inputs,
        Duration::from_secs(30),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Panics on a record dead-lettered twice.
        let got = dead_letters_once(&topics.deadletter, &[topics.targets.as_str()]);
        if got.len() == bad_targets {
            assert!(got.values().all(|r| r == "invalid_period"), "{got:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {bad_targets} bad targets dead-lettered",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Milestones are crossed whatever the date; alerts need some of a period to have elapsed.
    assert!(
        wins.len() > big_wins.len(),
        "the targets service announced no milestone during the kills"
    );
    let mode = if divided {
        "divided ingest"
    } else {
        "default mode"
    };
    println!(
        "faults ({mode}): 1 stream of {RECORDS} records over {stream_secs:.0} s, {kills} rounds of SIGKILLs and \
         restarts ({INSTANCES} instances each of deals, killed {} times, and activities, {}; targets {}); {series} series equal to a clean run, \
         {published} metric records with 0 repeats; targets service: {target_series} series equal \
         to a clean run, {} alert records (every one a change of state); {} celebrations once \
         each ({} big wins, as in the clean run); {} dead letters once each, as in the clean run, and {bad_targets} bad targets \
         dead-lettered once each; \
         differences: 0",
        killed[0],
        killed[1],
        killed[2],
        alerts.len(),
        wins.len(),
        big_wins.len(),
        dead
    );
}
