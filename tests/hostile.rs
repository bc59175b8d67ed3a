//! Hostile input on a real broker: more than 10,000 malformed or adversarial records of every
//! kind the contract names, label-injection ids, a flood of distinct rep ids, and more rep
//! series than the per-family cap. Every record is rejected to the dead-letter topic with its
//! reason or handled per the contract; both services stay up; `/metrics` stays valid.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeZone, Utc};
use salespulse_e2e::*;
use serde_json::json;

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/x-protobuf";
const CAP: usize = 1000;
const DISTINCT_REPS: usize = 1_000_000;
const ROSTERED: usize = 2_000;

fn rfc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

type Rec = RawRecord<'static>;
/// Reasons a record may be rejected with, by its key and value.
type Allowed = HashMap<(Option<Vec<u8>>, Vec<u8>), Vec<&'static [&'static str]>>;

/// A record and the reasons it may be rejected with (empty: it must be accepted).
struct Case {
    rec: Rec,
    reasons: &'static [&'static str],
}

fn deal(i: usize, now: i64) -> serde_json::Value {
    json!({"event_id": format!("h{i}"), "deal_id": format!("hd{i}"), "rep_id": "rep-h", "stage": "proposal",
        "amount": "10", "currency": "USD", "created_at": rfc(now - 60), "occurred_at": rfc(now - 60)})
}

fn case(v: serde_json::Value, reasons: &'static [&'static str]) -> Case {
    let key = v["deal_id"].as_str().map(|k| k.as_bytes().to_vec());
    Case {
        rec: (key, Some(v.to_string().into_bytes()), JSON),
        reasons,
    }
}

fn hostile_deals(now: i64) -> Vec<Case> {
    let mut out = Vec::new();
    for i in 0..800 {
        // Not UTF-8 at all, and UTF-8 broken inside a string.
        out.push(Case {
            rec: (None, Some(vec![0xff, 0xfe, (i % 256) as u8, 0x80]), JSON),
            reasons: &["invalid_json"],
        });
        let mut bytes = br#"{"event_id":""#.to_vec();
        bytes.extend([0xc3, 0x28, b'"', b'}']);
        out.push(Case {
            rec: (None, Some(bytes), JSON),
            reasons: &["invalid_json"],
        });
        // Truncated and garbage JSON.
        let full = deal(i, now).to_string();
        out.push(Case {
            rec: (None, Some(full.as_bytes()[..full.len() / 2].to_vec()), JSON),
            reasons: &["invalid_json"],
        });
        out.push(Case {
            rec: (None, Some(b"{,,}".to_vec()), JSON),
            reasons: &["invalid_json"],
        });
        // Wrong types.
        let mut d = deal(i, now);
        d["amount"] = json!({"value": 1});
        out.push(case(d, &["wrong_type"]));
        let mut d = deal(i, now);
        d["rep_id"] = json!(42);
        out.push(case(d, &["wrong_type"]));
        let mut d = deal(i, now);
        d["stage"] = json!(["proposal"]);
        out.push(case(d, &["wrong_type"]));
        // NaN, infinities and numbers no decimal holds.
        out.push(Case {
            rec: (
                None,
                Some(
                    deal(i, now)
                        .to_string()
                        .replace("\"10\"", "NaN")
                        .into_bytes(),
                ),
                JSON,
            ),
            reasons: &["invalid_json"],
        });
        out.push(Case {
            rec: (
                None,
                Some(
                    deal(i, now)
                        .to_string()
                        .replace("\"10\"", "1e400")
                        .into_bytes(),
                ),
                JSON,
            ),
            reasons: &["invalid_json", "amount_out_of_range"],
        });
        const INVALID: &[&str] = &["invalid_amount"];
        const NEGATIVE: &[&str] = &["negative_amount"];
        const RANGE: &[&str] = &["amount_out_of_range"];
        for (amount, reasons) in [
            ("NaN", INVALID),
            ("Infinity", INVALID),
            ("12,50", INVALID),
            ("-5", NEGATIVE),
            ("1e30", RANGE),
            ("99999999999999999999999999999999999", RANGE),
        ] {
            let mut d = deal(i, now);
            d["amount"] = json!(amount);
            out.push(case(d, reasons));
        }
        // Dates far in the past and the future.
        let mut d = deal(i, now);
        d["occurred_at"] = json!("0001-01-01T00:00:00Z");
        out.push(case(d, &["invalid_timestamp"]));
        let mut d = deal(i, now);
        d["occurred_at"] = json!("9999-12-31T00:00:00Z");
        out.push(case(d, &["future_timestamp"]));
        // Unknown stage and currency, empty ids, a key that names another deal.
        let mut d = deal(i, now);
        d["stage"] = json!("won'; DROP TABLE deals");
        out.push(case(d, &["unknown_stage"]));
        let mut d = deal(i, now);
        d["currency"] = json!("BTC");
        out.push(case(d, &["unknown_currency"]));
        let mut d = deal(i, now);
        d["event_id"] = json!("");
        out.push(case(d, &["empty_id"]));
        let d = deal(i, now);
        out.push(Case {
            rec: (
                Some(b"someone-else".to_vec()),
                Some(d.to_string().into_bytes()),
                JSON,
            ),
            reasons: &["key_mismatch"],
        });
        // Protobuf garbage, and a content type nobody speaks.
        out.push(Case {
            rec: (
                None,
                Some(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, (i % 256) as u8]),
                PROTOBUF,
            ),
            reasons: &["invalid_protobuf"],
        });
        let d = deal(i, now);
        out.push(Case {
            rec: (None, Some(d.to_string().into_bytes()), "text/csv"),
            reasons: &["unsupported_content_type"],
        });
    }
    for i in 0..50 {
        out.push(Case {
            rec: (
                None,
                Some(
                    vec![b'['; 10_000]
                        .into_iter()
                        .chain(vec![b']'; 10_000])
                        .collect(),
                ),
                JSON,
            ),
            reasons: &["invalid_json", "wrong_type"],
        });
        let mut d = deal(i, now);
        d["padding"] = json!("x".repeat(70_000));
        out.push(case(d, &["payload_too_large"]));
    }
    out
}

/// Rep ids that try to break out of a label value.
const INJECTION: [&str; 5] = [
    "rep\"}evil{x=\"1",
    "rep\\\\",
    "rep\nnewline 1",
    "rep{brace}",
    "rep\"quote",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_rejected_or_handled_and_nothing_breaks() {
    require_broker();
    let topics = Topics::unique("hostile");
    let group = format!("g-{}", topics.suffix);
    for svc in ["deals", "activities"] {
        set_service_env(
            svc,
            "SALESPULSE_EXPOSE__MAX_SERIES_PER_FAMILY",
            &CAP.to_string(),
        );
    }
    let (dport, aport) = (free_port(), free_port());
    let mut deals = Service::start("deals", &topics, dport, &group);
    let mut acts = Service::start("activities", &topics, aport, &group);
    deals.wait_ready(Duration::from_secs(60)).await;
    acts.wait_ready(Duration::from_secs(60)).await;
    let now = Utc::now().timestamp();

    // The roster: injection reps and ROSTERED ordinary reps, all in one team.
    let mut roster: Vec<Rec> = INJECTION
        .iter()
        .map(|r| {
            (
                Some(r.as_bytes().to_vec()),
                Some(
                    json!({"rep_id": r, "team_id": "team-h"})
                        .to_string()
                        .into_bytes(),
                ),
                JSON,
            )
        })
        .collect();
    for i in 0..ROSTERED {
        let r = format!("rostered-{i}");
        roster.push((
            Some(r.clone().into_bytes()),
            Some(
                json!({"rep_id": r, "team_id": "team-h"})
                    .to_string()
                    .into_bytes(),
            ),
            JSON,
        ));
    }
    produce_many(&topics.roster, &roster);

    let mut cases = hostile_deals(now);
    for (i, rep) in INJECTION.iter().enumerate() {
        let mut d = deal(100_000 + i, now);
        d["rep_id"] = json!(rep);
        d["stage"] = json!("closed_won");
        cases.push(case(d, &[]));
    }
    let deal_records: Vec<Rec> = cases.iter().map(|c| c.rec.clone()).collect();
    let hostile = cases.iter().filter(|c| !c.reasons.is_empty()).count();
    assert!(hostile >= 10_000, "{hostile} hostile records");

    // Activities: a flood of distinct rep ids (not on the roster), one per rostered rep
    // (more rep series than the cap), and a few hostile ones.
    let act = |i: usize, rep: &str, kind: &str| -> Rec {
        (Some(rep.as_bytes().to_vec()),
         Some(json!({"event_id": format!("a{i}"), "rep_id": rep, "kind": kind, "occurred_at": rfc(now - 120)}).to_string().into_bytes()),
         JSON)
    };
    let mut act_records: Vec<Rec> = (0..DISTINCT_REPS)
        .map(|i| act(i, &format!("flood-{i}"), "email"))
        .collect();
    act_records
        .extend((0..ROSTERED).map(|i| act(DISTINCT_REPS + i, &format!("rostered-{i}"), "call")));
    let act_rejects = 500;
    act_records.extend((0..act_rejects).map(|i| act(10_000_000 + i, "rep-x", "lunch")));

    let started = Instant::now();
    produce_many(&topics.deals, &deal_records);
    produce_many(&topics.activities, &act_records);
    println!(
        "hostile: produced {} deal and {} activity records in {:.1} s",
        deal_records.len(),
        act_records.len(),
        started.elapsed().as_secs_f64()
    );

    // Wait until every record is accounted for by an outcome.
    let total = |m: &BTreeMap<String, f64>, topic: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| {
                k.starts_with("salespulse_events_total{")
                    && k.contains(&format!("topic=\"{topic}\""))
            })
            .map(|(_, v)| v)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(480);
    let (dm, am) = loop {
        for s in [&mut deals, &mut acts] {
            assert!(
                s.child.try_wait().expect("status").is_none(),
                "{} stopped",
                s.name
            );
        }
        let dm = parse_metrics(&deals.metrics().await);
        let am = parse_metrics(&acts.metrics().await);
        if total(&dm, &topics.deals) >= deal_records.len() as f64
            && total(&am, &topics.activities) >= act_records.len() as f64
        {
            break (dm, am);
        }
        assert!(
            Instant::now() < deadline,
            "records not all accounted for: deals {} of {}, activities {} of {}",
            total(&dm, &topics.deals),
            deal_records.len(),
            total(&am, &topics.activities),
            act_records.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let outcome = |m: &BTreeMap<String, f64>, svc: &str, topic: &str, o: &str| {
        m.get(&metric_key(
            "salespulse_events_total",
            &[("outcome", o), ("service", svc), ("topic", topic)],
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(
        outcome(&dm, "deals", &topics.deals, "rejected"),
        hostile as f64
    );
    assert_eq!(
        outcome(&dm, "deals", &topics.deals, "applied"),
        INJECTION.len() as f64
    );
    assert_eq!(
        outcome(&am, "activities", &topics.activities, "rejected"),
        act_rejects as f64
    );
    assert_eq!(
        outcome(&am, "activities", &topics.activities, "applied"),
        (DISTINCT_REPS + ROSTERED) as f64
    );

    // Every rejected record is on the dead-letter topic with an expected reason and position.
    // A record is counted when it is processed and its dead letter committed with the next
    // tick (spaced out while a backlog is worked off), so the topic is read until it has them;
    // on a slow machine an aborted transaction's dead letters are redone from the committed
    // offsets of a million records first.
    let deadline = Instant::now() + Duration::from_secs(180);
    let dlq = loop {
        let dlq = read_topic(&topics.deadletter);
        if dlq.len() >= hostile + act_rejects || Instant::now() > deadline {
            break dlq;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(dlq.len(), hostile + act_rejects, "dead letters");
    let mut by_value: Allowed = HashMap::new();
    for c in cases.iter().filter(|c| !c.reasons.is_empty()) {
        by_value
            .entry((c.rec.0.clone(), c.rec.1.clone().unwrap_or_default()))
            .or_default()
            .push(c.reasons);
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &dlq {
        let reason = r.headers.get("reason").cloned().unwrap_or_default();
        *reasons.entry(reason.clone()).or_default() += 1;
        assert!(r
            .headers
            .get("source.offset")
            .is_some_and(|o| o.parse::<i64>().is_ok()));
        assert!(r
            .headers
            .get("reason.detail")
            .is_some_and(|d| !d.is_empty()));
        if r.headers.get("source.topic") == Some(&topics.deals) {
            let allowed = by_value
                .get(&(r.key.clone(), r.value.clone().unwrap_or_default()))
                .expect("original bytes kept");
            assert!(
                allowed.iter().any(|a| a.contains(&reason.as_str())),
                "unexpected reason {reason}"
            );
        } else {
            assert_eq!(reason, "unknown_kind");
        }
    }
    println!("hostile: {} dead letters by reason {reasons:?}", dlq.len());

    // /metrics stays valid, label values are escaped, and the cap holds. Counted records
    // reach /metrics with the next emission, so wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (dtext, atext, am) = loop {
        let dtext = deals.metrics().await;
        let atext = acts.metrics().await;
        let am = parse_metrics(&atext);
        let emitted = am
            .get(&metric_key(
                "sales_org_activities",
                &[("kind", "email"), ("window", "1h")],
            ))
            .is_some_and(|v| *v == DISTINCT_REPS as f64)
            && dtext.contains("rep=\"rep{brace}\"");
        let refused = am.contains_key(&metric_key(
            "salespulse_series_refused_total",
            &[("family", "sales_rep_activities")],
        ));
        if (emitted && refused) || Instant::now() > deadline {
            break (dtext, atext, am);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (name, text) in [("deals", &dtext), ("activities", &atext)] {
        let complaints = promtool_check(text);
        assert!(
            complaints.trim().is_empty(),
            "promtool check metrics on {name}: {complaints}"
        );
    }
    assert!(
        dtext.contains(r#"rep="rep\"}evil{x=\"1""#),
        "quotes are escaped"
    );
    assert!(
        dtext.contains(r#"rep="rep\nnewline 1""#),
        "newlines are escaped"
    );
    let rep_call_series = atext
        .lines()
        .filter(|l| l.starts_with("sales_rep_activities{"))
        .count();
    assert!(
        rep_call_series <= CAP,
        "{rep_call_series} series over the cap {CAP}"
    );
    let refused = am
        .get(&metric_key(
            "salespulse_series_refused_total",
            &[("family", "sales_rep_activities")],
        ))
        .copied()
        .unwrap_or(0.0);
    assert!(refused > 0.0, "the cap refused series");
    let org_emails = am
        .get(&metric_key(
            "sales_org_activities",
            &[("kind", "email"), ("window", "1h")],
        ))
        .copied();
    assert_eq!(
        org_emails,
        Some(DISTINCT_REPS as f64),
        "the flood still counts in the org"
    );
    assert!(
        !atext.contains("flood-1\""),
        "reps not on the roster get no series"
    );
    deals.wait_ready(Duration::from_secs(30)).await;
    acts.wait_ready(Duration::from_secs(30)).await;
    println!("hostile: both services up and ready; promtool clean; {rep_call_series} rep series kept, {refused} refused by the cap");

    // A new deployment over the same input (a group and outputs of its own) whose instance
    // reads the records before it holds the leader's slot, and so without the duty to
    // dead-letter them: a member of the test's, first in the assignor's order, holds slot 0
    // while the instance reads, then leaves. On taking the lead, the instance dead-letters
    // what it read before, although the group has committed nothing yet.
    let late_topics = topics.clean();
    let late_group = format!("{group}-late");
    let holder = hold_slot_zero(&format!("{late_group}-deals-slots"));
    let mut late = Service::start("deals", &late_topics, free_port(), &late_group);
    wait_read_to_end(&late, &topics.deals, 3, Duration::from_secs(120)).await;
    drop(holder);
    late.wait_ready(Duration::from_secs(120)).await;
    wait_committed(&late_group, &topics.deals, Duration::from_secs(120));
    let same = wait_same_dead_letters(
        &late_topics.deadletter,
        &topics.deadletter,
        &[topics.deals.as_str()],
        Duration::from_secs(30),
    );
    let log = without_colours(&std::fs::read_to_string(&late.log).unwrap_or_default());
    let caught_up = log
        .lines()
        .find(|l| l.contains("leading:"))
        .and_then(|l| l.split("dead_letters=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or("?")
        .to_owned();
    assert_eq!(
        caught_up,
        same.to_string(),
        "every rejected record was read before the lead was taken"
    );
    assert!(
        late.terminate().success(),
        "the late deals instance stopped cleanly"
    );
    println!(
        "hostile: a deals instance that read every record before it led dead-lettered the same {same} records once each, on taking the lead"
    );
}

/// A member of the slots group `group` that holds slot 0 (its name sorts before any
/// service's, and the assignor hands slot 0 to the first) until it is dropped.
struct SlotHolder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn hold_slot_zero(group: &str) -> SlotHolder {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::sync::atomic::{AtomicBool, Ordering};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("client.id", "0-slot-holder")
        .set("partition.assignment.strategy", "roundrobin")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("a slots consumer");
    consumer
        .subscribe(&["salespulse.slots"])
        .expect("joins the slots group");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let (held, holding) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        // Polled, so that it takes part in every rebalance; bounded however the test ends.
        let until = Instant::now() + Duration::from_secs(300);
        while !stopping.load(Ordering::Relaxed) && Instant::now() < until {
            let _ = consumer.poll(Duration::from_millis(100));
            if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                let _ = held.send(());
            }
        }
        consumer.unsubscribe();
    });
    holding
        .recv_timeout(Duration::from_secs(60))
        .expect("the holder is assigned the slots within a minute");
    SlotHolder {
        stop,
        thread: Some(thread),
    }
}

impl Drop for SlotHolder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits (bounded) until `s` has read every partition of `topic` to its end, by its
/// `salespulse_consumer_lag` (a follower counts no outcomes, but measures its lag).
async fn wait_read_to_end(s: &Service, topic: &str, partitions: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let label = format!("topic=\"{topic}\"");
    loop {
        // Up before it serves: an unanswered scrape shows nothing read.
        let text = match reqwest::get(format!("http://127.0.0.1:{}/metrics", s.port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let lags: Vec<f64> = parse_metrics(&text)
            .into_iter()
            .filter(|(k, _)| k.starts_with("salespulse_consumer_lag{") && k.contains(&label))
            .map(|(_, v)| v)
            .collect();
        if lags.len() == partitions && lags.iter().all(|l| *l == 0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} has not read {topic} to its end: lags {lags:?}",
            s.name
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
