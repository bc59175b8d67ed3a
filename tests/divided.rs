//! Divided ingest (`divide_input = true`): three instances per service in one group each
//! consume the input partitions Kafka assigns them and sum each other's cells through the
//! cells topic. The input is divided, not copied (the records each instance consumed add up
//! to the input), every business series is on exactly one instance and the union equals a
//! clean single instance reading the same input, through a SIGKILL and a new instance
//! mid-stream, after which the partitions are restored from their snapshots; the metrics topic rebuilds the clean board without a repeated value, and
//! celebrations and dead letters are those of the clean run, once each.

use std::process::Child;
use std::time::{Duration, Instant};

use salespulse_e2e::*;

const RECORDS: u64 = 20_000;
const SERVICES: [&str; 2] = ["deals", "activities"];

fn stream(topics: &Topics, seed: u64) -> Child {
    simulator(topics)
        .args(["--seed", &seed.to_string()])
        .args(["--rate", "5000", "--records", &RECORDS.to_string()])
        .args(["--backfill-days", "0", "--reps", "40", "--teams", "6"])
        .spawn()
        .expect("simulator starts")
}

/// A stalled member holds a rebalance up for `max.poll.interval.ms` (30 s), and each
/// rebalance rebuilds every instance: the wait is generous, and the time taken is reported.
const AGREE_WITHIN: Duration = Duration::from_secs(150);

fn input_of<'a>(topics: &'a Topics, service: &str) -> &'a str {
    if service == "deals" {
        &topics.deals
    } else {
        &topics.activities
    }
}

/// The value of an unlabelled gauge in a `/metrics` text (0 when absent).
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_divide_the_input_and_equal_a_clean_run() {
    require_broker();
    let topics = Topics::unique("divided");
    let group = format!("g-{}", topics.suffix);
    let clean_topics = topics.clean();
    let mut clean = Vec::new();
    for name in SERVICES {
        let mut s = Service::start(name, &clean_topics, free_port(), &format!("{group}-clean"));
        s.wait_ready(Duration::from_secs(60)).await;
        clean.push(s);
    }
    // Snapshots every second: the partitions of a killed instance are restored from them.
    for name in SERVICES {
        let upper = name.to_uppercase();
        set_service_env(name, &format!("SALESPULSE_{upper}__DIVIDE_INPUT"), "true");
        set_service_env(
            name,
            &format!("SALESPULSE_{upper}__SNAPSHOT_INTERVAL_SECONDS"),
            "1",
        );
    }
    // Three instances per service, all assigned before records flow: their counts of
    // consumed records then add up to the input exactly.
    let mut divided: Vec<Vec<Service>> = SERVICES
        .iter()
        .map(|name| {
            (0..3)
                .map(|_| Service::start(name, &topics, free_port(), &group))
                .collect()
        })
        .collect();
    // Ready together twice in a row: the group has settled, no rebalance is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settled = 0;
    while settled < 2 {
        assert!(Instant::now() < deadline, "the instances did not settle");
        let mut all = true;
        for s in divided.iter().flatten() {
            all &= s.is_ready().await;
        }
        settled = if all { settled + 1 } else { 0 };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut sim = stream(&topics, 11);
    simulator_done(&mut sim, &topics);
    let mut first = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        let instances: Vec<&Service> = divided[i].iter().collect();
        let (series, took) = wait_union_equal(
            &instances,
            &clean[i],
            &format!("{name}, 3 instances"),
            AGREE_WITHIN,
        )
        .await;
        let input = input_of(&topics, name);
        let total = read_topic(input).len() as f64;
        let mut counts = Vec::new();
        let mut assigned = Vec::new();
        let mut replaced = Vec::new();
        for s in &instances {
            let text = s.metrics().await;
            counts.push(consumed(&text, input));
            let key =
                format!("salespulse_rebalances_total{{change=\"assigned\",service=\"{name}\"}}");
            assigned.push(parse_metrics(&text).get(&key).copied().unwrap_or(0.0));
            replaced.push(
                parse_metrics(&text)
                    .iter()
                    .filter(|(k, _)| k.starts_with("salespulse_consumers_replaced_total"))
                    .fold(0.0, |sum, (_, v)| sum + v),
            );
        }
        // Nothing here stalls a consumer: a replacement would be the stall check misreading
        // a healthy one (for instance, commit markers taken for records left unread).
        assert!(
            replaced.iter().all(|r| *r == 0.0),
            "{name}: consumers replaced by the instances: {replaced:?}"
        );
        // Each instance holds a share, so each was handed one, and said so on /metrics.
        assert!(
            assigned.iter().all(|a| *a >= 1.0),
            "{name}: assignments counted by the instances: {assigned:?}"
        );
        assert_eq!(
            counts.iter().sum::<f64>(),
            total,
            "{name}: records consumed by the instances {counts:?} add up to the input"
        );
        assert!(
            counts.iter().all(|c| *c > 0.0 && *c < total),
            "{name}: each instance consumed part of the input, not all of it: {counts:?} of {total}"
        );
        first.push(format!(
            "{name}: {series} series equal after {took:.1?}, input {total} records consumed as {counts:?}, \
             assignments per instance {assigned:?}, consumers replaced {replaced:?}"
        ));
    }

    // A SIGKILL and a new instance per service while the second stream flows.
    let mut sim = stream(&topics, 12);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, name) in SERVICES.iter().enumerate() {
        divided[i][0].kill();
        divided[i][0] = Service::start(name, &topics, free_port(), &group);
    }
    simulator_done(&mut sim, &topics);
    let mut second = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        divided[i][0].wait_ready(Duration::from_secs(120)).await;
        let instances: Vec<&Service> = divided[i].iter().collect();
        let (series, took) = wait_union_equal(
            &instances,
            &clean[i],
            &format!("{name}, after a kill"),
            AGREE_WITHIN,
        )
        .await;
        // The last rebuild of each instance restored its partitions from their snapshots and
        // replayed only the records after them, not every record of its partitions.
        let input = input_of(&topics, name);
        let total = read_topic(input).len() as f64;
        let mut replayed = Vec::new();
        for s in &instances {
            replayed.push(gauge(
                &s.metrics().await,
                "salespulse_restore_replayed_records",
            ));
        }
        assert!(
            replayed.iter().sum::<f64>() < total / 2.0,
            "{name}: the rebuilds replayed {replayed:?} of {total} records: snapshots unused"
        );
        second.push(format!(
            "{name}: {series} series equal after {took:.1?}, records replayed by the instances' last rebuilds \
             {replayed:?} of {total}"
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (keys, repeats) = loop {
        let (got, repeats, _) = board_of(&topics.metrics);
        let (want, _, _) = board_of(&clean_topics.metrics);
        if got == want {
            break (got.len(), repeats);
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
    assert_eq!(
        repeats, 0,
        "records on the metrics topic that repeat their key's value"
    );
    let wins = same_celebrations_once(&topics.celebrations, &clean_topics.celebrations);
    let inputs = [topics.deals.as_str(), topics.activities.as_str()];
    let dead = wait_same_dead_letters(
        &topics.deadletter,
        &clean_topics.deadletter,
        &inputs,
        Duration::from_secs(30),
    );
    for name in SERVICES {
        clear_service_env(name);
    }
    println!(
        "divided: 2 streams of {RECORDS} records, 3 instances per service; {}; \
         after a SIGKILL and a new instance mid-stream: {}; metrics topic {keys} keys equal to \
         the clean run ({repeats} repeated values), {wins} celebrations once each, {dead} dead \
         letters once each as in the clean run",
        first.join("; "),
        second.join("; ")
    );
}
