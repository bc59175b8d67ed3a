//! Scale-out: the deals and activities services go from one instance to three and back to one
//! while records flow. With three, every business series is on exactly one instance's
//! `/metrics`, the union equals a clean single instance reading the same input, and Prometheus
//! `sum` over the instances gives the org totals; back at one, the survivor shows everything.
//! The metrics topic rebuilds the clean board, and no celebration is announced twice. It runs
//! twice: in the default mode, and with the instances dividing the input
//! (`divide_input = true`), where the instances started mid-stream read only part of it.

use std::process::Child;
use std::time::{Duration, Instant};

use salespulse_e2e::*;

const AGREE_WITHIN: Duration = Duration::from_secs(60);

const RECORDS: u64 = 50_000;
const SERVICES: [&str; 2] = ["deals", "activities"];

fn stream(topics: &Topics, seed: u64) -> Child {
    simulator(topics)
        .args(["--seed", &seed.to_string()])
        .args(["--rate", "5000", "--records", &RECORDS.to_string()])
        .args(["--backfill-days", "0", "--reps", "40", "--teams", "6"])
        .spawn()
        .expect("simulator starts")
}

fn gauge(text: &str, family: &str) -> f64 {
    parse_metrics(text)
        .into_iter()
        .find(|(k, _)| k.split('{').next() == Some(family))
        .map_or(f64::NAN, |(_, v)| v)
}

/// Waits (bounded) until the instances of one service hold every slot between them, each at
/// least one, and exactly one of them leads (none, dividing the input: no instance leads).
async fn wait_spread(instances: &[&Service], within: Duration, divided: bool) -> Vec<f64> {
    let want_leaders = if divided { 0.0 } else { 1.0 };
    let deadline = Instant::now() + within;
    loop {
        let mut slots = Vec::new();
        let mut leaders = 0.0;
        for s in instances {
            let text = s.metrics().await;
            slots.push(gauge(&text, "salespulse_owned_slots"));
            leaders += gauge(&text, "salespulse_leader");
        }
        let spread = slots.iter().all(|n| *n > 0.0) && slots.iter().sum::<f64>() == 12.0;
        if spread && leaders == want_leaders {
            return slots;
        }
        assert!(
            Instant::now() < deadline,
            "slots not spread within {within:?}: {slots:?}, {leaders} leaders"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until Prometheus' `sum` over the instances of `team_family` and of `org_family`
/// both equal the clean run's org value.
async fn wait_prom_sum(
    prom: &Prometheus,
    clean: &Service,
    team_q: &str,
    org_q: &str,
    org_key: &str,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let want = parse_metrics(&clean.metrics().await)
            .get(org_key)
            .copied()
            .unwrap_or(f64::NAN);
        let teams = prom.query(&format!("sum({team_q})")).await;
        let org = prom.query(&format!("sum({org_q})")).await;
        let got = (teams.first().map(|x| x.1), org.first().map(|x| x.1));
        if got == (Some(want), Some(want)) && want > 0.0 {
            return want;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus sum({team_q}) and sum({org_q}) are {got:?}, the clean org value {want}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The two tests share the machine's two cores: one runs at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_three_to_one_instances_during_a_stream() {
    let _one = ONE_AT_A_TIME.lock().await;
    one_to_three_to_one(false).await;
}

/// The same with the instances dividing the input (`divide_input = true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_three_to_one_instances_dividing_the_input() {
    let _one = ONE_AT_A_TIME.lock().await;
    one_to_three_to_one(true).await;
}

async fn one_to_three_to_one(divided: bool) {
    require_broker();
    let topics = Topics::unique(if divided { "scale-divided" } else { "scale" });
    let group = format!("g-{}", topics.suffix);
    for name in SERVICES {
        clear_service_env(name);
    }

    // The reference: one instance per service reading the same input into topics of its own.
    let clean_topics = topics.clean();
    let clean_group = format!("{group}-clean");
    let mut clean = Vec::new();
    for name in SERVICES {
        let mut s = Service::start(name, &clean_topics, free_port(), &clean_group);
        s.wait_ready(Duration::from_secs(60)).await;
        clean.push(s);
    }

    // Three ports per service, scraped by one Prometheus from the start.
    let ports: Vec<[u16; 3]> = SERVICES
        .iter()
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let all: Vec<u16> = ports.iter().flatten().copied().collect();
    let prom = Prometheus::start(&all, &topics.suffix);
    if divided {
        for name in SERVICES {
            let key = format!("SALESPULSE_{}__DIVIDE_INPUT", name.to_uppercase());
            set_service_env(name, &key, "true");
        }
    }
    let mut first = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        let mut s = Service::start(name, &topics, ports[i][0], &group);
        s.wait_ready(Duration::from_secs(60)).await;
        first.push(s);
    }

    // 1 → 3 while the first stream flows.
    let mut sim = stream(&topics, 7);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut more: Vec<Vec<Service>> = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        more.push(
            (1..3)
                .map(|k| Service::start(name, &topics, ports[i][k], &group))
                .collect(),
        );
    }
    simulator_done(&mut sim, &topics);
    let mut three_phase = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        for s in more[i].iter_mut() {
            s.wait_ready(Duration::from_secs(120)).await;
        }
        let instances = [&first[i], &more[i][0], &more[i][1]];
        let slots = wait_spread(&instances, Duration::from_secs(60), divided).await;
        let (series, _) = wait_union_equal(
            &instances,
            &clean[i],
            &format!("{name} with 3"),
            AGREE_WITHIN,
        )
        .await;
        let input = if *name == "deals" {
            &topics.deals
        } else {
            &topics.activities
        };
        let total = read_topic(input).len() as f64;
        let mut counts = Vec::new();
        for s in instances {
            counts.push(consumed(&s.metrics().await, input));
        }
        // Dividing the input, an instance started mid-stream reads only its partitions'
        // records; copying it, every instance reads all of it.
        if divided {
            assert!(
                counts[1..].iter().all(|c| *c < total),
                "{name}: the instances started with three read part of the input, not all: {counts:?} of {total}"
            );
        }
        three_phase.push(format!(
            "{name}: slots {slots:?}, {series} series, input records read {counts:?} of {total}"
        ));
    }
    // Nothing exported twice, and the sums over instances are the org totals.
    let twice = prom
        .query(r#"count by (__name__, rep, team, region, window, kind, stage, to, category, rollup, period_type, period, metric) ({__name__=~"sales_(rep|team|region|org)_.+"}) > 1"#)
        .await;
    assert!(
        twice.is_empty(),
        "series exported by two instances: {twice:?}"
    );
    let bookings = wait_prom_sum(
        &prom,
        &clean[0],
        r#"sales_team_deals_won{window="30d"}"#,
        r#"sales_org_deals_won{window="30d"}"#,
        &metric_key("sales_org_deals_won", &[("window", "30d")]),
    )
    .await;
    let calls = wait_prom_sum(
        &prom,
        &clean[1],
        r#"sales_team_activities{window="30d",kind="call"}"#,
        r#"sales_org_activities{window="30d",kind="call"}"#,
        &metric_key(
            "sales_org_activities",
            &[("kind", "call"), ("window", "30d")],
        ),
    )
    .await;

    // 3 → 1 while the second stream flows.
    let mut sim = stream(&topics, 8);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for group in more.iter_mut() {
        for s in group.iter_mut() {
            assert!(s.terminate().success(), "{} stopped cleanly", s.name);
        }
    }
    simulator_done(&mut sim, &topics);
    let mut one_phase = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        first[i].wait_ready(Duration::from_secs(120)).await;
        let (series, _) = wait_union_equal(
            &[&first[i]],
            &clean[i],
            &format!("{name} back at 1"),
            AGREE_WITHIN,
        )
        .await;
        // It holds every slot (and leads, in the default mode) once its take-over is done,
        // which can end after the board, filled from its own state first, equals the clean
        // run's.
        let slots = wait_spread(&[&first[i]], Duration::from_secs(60), divided).await;
        assert_eq!(slots, [12.0], "{name} holds every slot");
        one_phase.push(format!("{name}: {series} series"));
    }
    let bookings_after = wait_prom_sum(
        &prom,
        &clean[0],
        r#"sales_team_deals_won{window="30d"}"#,
        r#"sales_org_deals_won{window="30d"}"#,
        &metric_key("sales_org_deals_won", &[("window", "30d")]),
    )
    .await;

    // The metrics topic rebuilds the clean board; celebrations once each.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (keys, repeats) = loop {
        let (scaled, repeats, _) = board_of(&topics.metrics);
        let (want, _, _) = board_of(&clean_topics.metrics);
        if scaled == want {
            break (scaled.len(), repeats);
        }
        assert!(
            Instant::now() < deadline,
            "the metrics topics differ: {} vs {} keys{}",
            scaled.len(),
            want.len(),
            topic_diffs(&scaled, &want)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // A new owner reads the board back to its end, transactions open then included, so it
    // never publishes a value a key already holds.
    assert_eq!(
        repeats, 0,
        "records on the metrics topic that repeat their key's previous value"
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
    let mode = if divided {
        "divided ingest"
    } else {
        "default mode"
    };
    println!(
        "scale ({mode}): 2 streams of {RECORDS} records; 1 → 3 instances ({}); Prometheus sum over instances = org: \
         deals won 30d {bookings}, calls 30d {calls}; 3 → 1 ({}), deals won 30d {bookings_after}; \
         metrics topic {keys} keys equal to the clean run ({repeats} repeated values), \
         {} celebrations once each, {dead} dead letters once each as in the clean run; differences: 0",
        three_phase.join("; "),
        one_phase.join("; "),
        wins
    );
}
