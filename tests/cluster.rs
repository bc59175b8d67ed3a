//! The services on a three-node cluster (replication factor 3, `min.insync.replicas=2`) while
//! brokers are SIGKILLed and restarted in turn and service instances are killed and started
//! while a broker is down: no instance exits by itself, and every number equals a clean run.
//! It runs twice on the same cluster: with every instance reading all input (the default), and
//! with the instances dividing the input (`divide_input = true`).

use std::process::Command;
use std::time::{Duration, Instant};

use salespulse_e2e::*;

const RECORDS: u64 = 30_000;

/// The cluster of `scripts/kafka-cluster.sh`, stopped when the test ends however it ends.
struct Cluster;

impl Cluster {
    fn script(args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(root().join("scripts/kafka-cluster.sh"))
            .args(args)
            .output()
            .expect("kafka-cluster.sh runs");
        assert!(
            out.status.success(),
            "kafka-cluster.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> (Cluster, String) {
        Cluster::script(&["start"]);
        (Cluster, Cluster::script(&["bootstrap"]))
    }

    fn kill(n: u8) {
        Cluster::script(&["kill", &n.to_string()]);
        println!("broker {n} killed");
    }

    fn restart(n: u8) {
        Cluster::script(&["start-node", &n.to_string()]);
        println!("broker {n} restarted");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/kafka-cluster.sh"))
            .arg("reset")
            .output();
    }
}

fn alive(services: &mut [Service]) {
    for s in services.iter_mut() {
        if let Ok(Some(status)) = s.child.try_wait() {
            panic!(
                "{} on port {} exited by itself with {status}:\n{}",
                s.name,
                s.port,
                log_tail(&s.log)
            );
        }
    }
}

/// One cluster for both modes: the instances reading all input, then dividing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_and_instances_killed_in_turn_change_no_number() {
    let (_cluster, servers) = Cluster::start();
    // Every client of this test process (services, simulator, readers) uses the cluster.
    std::env::set_var("KAFKA_BOOTSTRAP", &servers);
    require_broker();
    kills_in_turn(false).await;
    kills_in_turn(true).await;
}

async fn kills_in_turn(divided: bool) {
    let mode = if divided {
        "divided ingest"
    } else {
        "default mode"
    };
    println!("cluster, {mode}:");
    let topics = Topics::unique(if divided {
        "cluster-divided"
    } else {
        "cluster"
    });
    let group = format!("g-{}", topics.suffix);
    for s in ["deals", "activities"] {
        clear_service_env(s);
        set_service_env(s, "SALESPULSE_TOPICS__REPLICATION_FACTOR", "3");
        if divided {
            let key = format!("SALESPULSE_{}__DIVIDE_INPUT", s.to_uppercase());
            set_service_env(s, &key, "true");
        }
    }
    let start = |name: &str| Service::start(name, &topics, free_port(), &group);
    let mut deals = vec![start("deals"), start("deals")];
    let mut acts = vec![start("activities"), start("activities")];
    // Every instance's log, the killed ones' too: what a failure below is explained by.
    let mut logs: Vec<(String, std::path::PathBuf)> = deals
        .iter()
        .chain(acts.iter())
        .map(|s| (s.name.clone(), s.log.clone()))
        .collect();
    for s in deals.iter_mut().chain(acts.iter_mut()) {
        s.wait_ready(Duration::from_secs(90)).await;
    }
    let started = Instant::now();
    let mut sim = simulator(&topics)
        .args(["--seed", "11", "--rate", "2500", "--backfill-days", "0"])
        .args([
            "--records",
            &RECORDS.to_string(),
            "--replication-factor",
            "3",
        ])
        .spawn()
        .expect("simulator starts");

    // Each broker in turn goes down; while it is down an instance is killed and a new one
    // starts, then the broker comes back.
    let mut instance_kills = 0;
    for (broker, service) in [(2u8, "deals"), (3, "activities"), (1, "deals")] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Cluster::kill(broker);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pool = if service == "deals" {
            &mut deals
        } else {
            &mut acts
        };
        pool[0].kill();
        pool.remove(0);
        let mut fresh = start(service);
        logs.push((fresh.name.clone(), fresh.log.clone()));
        fresh.wait_ready(Duration::from_secs(120)).await;
        println!(
            "{service}: an instance killed and a new one ready while broker {broker} is down ({:.1} s in)",
            started.elapsed().as_secs_f64()
        );
        pool.push(fresh);
        instance_kills += 1;
        alive(&mut deals);
        alive(&mut acts);
        Cluster::restart(broker);
    }
    simulator_done(&mut sim, &topics);
    println!(
        "{RECORDS} records produced through 3 broker kills and {instance_kills} instance kills in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for s in deals.iter_mut().chain(acts.iter_mut()) {
        s.wait_ready(Duration::from_secs(120)).await;
    }
    for (service, t) in [("deals", &topics.deals), ("activities", &topics.activities)] {
        // Instances that divide the input commit under a group per service.
        let group = match divided {
            true => format!("{group}-{service}-divided"),
            false => group.clone(),
        };
        wait_committed(&group, t, Duration::from_secs(120));
    }
    alive(&mut deals);
    alive(&mut acts);

    // A clean run over the same input on the same cluster, into outputs of its own.
    let clean_topics = topics.clean();
    let clean_group = format!("{group}-clean");
    for s in ["deals", "activities"] {
        clear_service_env(s);
        set_service_env(s, "SALESPULSE_TOPICS__REPLICATION_FACTOR", "3");
    }
    let mut clean = [
        Service::start("deals", &clean_topics, free_port(), &clean_group),
        Service::start("activities", &clean_topics, free_port(), &clean_group),
    ];
    for s in clean.iter_mut() {
        s.wait_ready(Duration::from_secs(120)).await;
    }
    for t in [&clean_topics.deals, &clean_topics.activities] {
        wait_committed(&clean_group, t, Duration::from_secs(120));
    }
    let got: Vec<&Service> = deals.iter().chain(acts.iter()).collect();
    let want: Vec<&Service> = clean.iter().collect();
    let series = assert_same_boards(&got, &want, "after the broker and instance kills").await;

    // The metrics topics rebuild the same board, and no value is published twice in a row.
    let deadline = Instant::now() + Duration::from_secs(60);
    let repeats = loop {
        let (crashed, repeats, _) = board_of(&topics.metrics);
        let (reference, _, _) = board_of(&clean_topics.metrics);
        if crashed == reference {
            break repeats;
        }
        if Instant::now() >= deadline {
            let differing: Vec<&String> = crashed
                .keys()
                .chain(reference.keys())
                .filter(|k| crashed.get(*k) != reference.get(*k))
                .take(3)
                .collect();
            let histories: String = logs
                .iter()
                .map(|(name, log)| {
                    format!("\n--- {name} {}:\n{}", log.display(), log_events(log, 40))
                })
                .collect();
            panic!(
                "the metrics topics differ: {} vs {} keys{}\nthe first differing keys on {}:{}\nthe instances' histories:{histories}",
                crashed.len(),
                reference.len(),
                topic_diffs(&crashed, &reference),
                topics.metrics,
                key_stories(&topics.metrics, &differing),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(
        repeats, 0,
        "metric records that repeat their key's previous value"
    );
    println!(
        "{series} series on /metrics of the {} instances equal a clean run; the metrics topics equal too",
        got.len()
    );
    // How the instances came through: starts over after a fenced producer, or after a
    // transactional call that never returned (see docs/design.md).
    let count = |needle: &str| -> usize {
        logs.iter()
            .map(|(_, log)| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .matches(needle)
                    .count()
            })
            .sum()
    };
    println!(
        "the instances started over {} times after a fenced producer and {} after a wedged one",
        count("this instance was fenced"),
        count("never returned; starting over")
    );
}
