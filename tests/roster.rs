//! The roster as every instance reads it. Written in transactions, its records are followed
//! by commit markers that no consumer is handed: an instance reads it to its end, puts the
//! reps under their roster teams, follows a move written later, and does not take its roster
//! consumer for one that stopped reading (it would replace it every 15 s, with a warning).
//! The same holds at the end of an aborted transaction, on the roster and on the input: its
//! records count nowhere, and the consumers standing before them are not taken for stuck.

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use salespulse_e2e::*;
use serde_json::json;

/// Sends one JSON record in the open transaction.
fn send_json(p: &BaseProducer, topic: &str, key: &str, v: &serde_json::Value) {
    let v = v.to_string();
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/json"),
    });
    p.send(BaseRecord::to(topic).key(key).payload(&v).headers(headers))
        .map_err(|(e, _)| e)
        .expect("queued");
}

/// Writes roster records (rep, team) in one transaction.
fn roster_transaction(p: &BaseProducer, topic: &str, moves: &[(&str, &str)]) {
    p.begin_transaction().expect("begin");
    for (rep, team) in moves {
        send_json(
            p,
            topic,
            rep,
            &json!({"rep_id": rep, "team_id": team, "active": true}),
        );
    }
    p.commit_transaction(Duration::from_secs(30))
        .expect("committed");
}

fn bookings(board: &std::collections::BTreeMap<String, f64>, rep: &str, team: &str) -> Option<f64> {
    board
        .get(&metric_key(
            "sales_rep_bookings",
            &[("rep", rep), ("team", team), ("window", "today")],
        ))
        .copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_written_in_transactions_is_read_to_its_end_and_followed() {
    require_broker();
    scenario("default").await;
    // One after the other: the setting holds for every later start in this process.
    set_service_env("deals", "SALESPULSE_DEALS__DIVIDE_INPUT", "true");
    scenario("divided").await;
}

/// The whole test in one mode of the deals service (`default` or `divided` ingest).
async fn scenario(mode: &str) {
    let topics = Topics::unique(&format!("roster-{mode}"));
    let mut deals = Service::start("deals", &topics, free_port(), &format!("g-roster-{mode}"));
    deals.wait_ready(Duration::from_secs(90)).await;

    let writer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set(
            "transactional.id",
            format!("roster-writer-{}", topics.suffix),
        )
        .create()
        .expect("producer");
    writer
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    roster_transaction(
        &writer,
        &topics.roster,
        &[("rep-a", "team-x"), ("rep-b", "team-y")],
    );

    let p = producer();
    let now = Utc::now();
    let at =
        |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339_opts(SecondsFormat::Secs, true);
    for (deal, rep, amount) in [("d1", "rep-a", "100"), ("d2", "rep-b", "250")] {
        let v = json!({"event_id": format!("e-{deal}"), "deal_id": deal, "rep_id": rep,
            "stage": "closed_won", "amount": amount, "currency": "USD",
            "created_at": at(600), "occurred_at": at(60)});
        produce_json(&p, &topics.deals, deal, &v).await;
    }
    let wait_for = |want: &'static [(&'static str, &'static str, f64)]| {
        let deals = &deals;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let board = business(&deals.metrics().await);
                if want
                    .iter()
                    .all(|(rep, team, v)| bookings(&board, rep, team) == Some(*v))
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the reps never showed as {want:?}; the board has {:?}\nthe log ends:\n{}",
                    board
                        .iter()
                        .filter(|(k, _)| k.starts_with("sales_rep_bookings{") && k.contains("today"))
                        .collect::<Vec<_>>(),
                    log_tail(&deals.log)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    wait_for(&[("rep-a", "team-x", 100.0), ("rep-b", "team-y", 250.0)]).await;

    // rep-b moves: its numbers follow it.
    roster_transaction(&writer, &topics.roster, &[("rep-b", "team-x")]);
    wait_for(&[("rep-a", "team-x", 100.0), ("rep-b", "team-x", 250.0)]).await;

    // An aborted transaction at the end of both topics: rep-a to team-z, and a won deal of
    // rep-a's. Neither counts; the consumers stand before records they are never handed.
    writer.begin_transaction().expect("begin");
    send_json(
        &writer,
        &topics.roster,
        "rep-a",
        &json!({"rep_id": "rep-a", "team_id": "team-z", "active": true}),
    );
    send_json(
        &writer,
        &topics.deals,
        "d3",
        &json!({"event_id": "e-d3", "deal_id": "d3", "rep_id": "rep-a",
            "stage": "closed_won", "amount": "999", "currency": "USD",
            "created_at": at(600), "occurred_at": at(30)}),
    );
    writer.flush(Duration::from_secs(30)).expect("flushed");
    writer
        .abort_transaction(Duration::from_secs(30))
        .expect("aborted");
    let moved = Instant::now();

    // Past the time after which a roster consumer that stands behind its end is replaced
    // (15 s, measured every 5 s): the roster's lag is 0 and its consumer was kept.
    let lag_key = metric_key(
        "salespulse_consumer_lag",
        &[
            ("partition", "0"),
            ("service", "deals"),
            ("topic", &topics.roster),
        ],
    );
    let input_lag = |text: &str| -> Option<f64> {
        let lags: Vec<f64> = parse_metrics(text)
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("salespulse_consumer_lag{")
                    && k.contains(&format!("topic=\"{}\"", topics.deals))
            })
            .map(|(_, v)| v)
            .collect();
        (!lags.is_empty()).then(|| lags.iter().sum())
    };
    let (mut lags, mut input_lags) = (Vec::new(), Vec::new());
    while moved.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = deals.metrics().await;
        lags.push(parse_metrics(&text).get(&lag_key).copied());
        input_lags.push(input_lag(&text));
    }
    assert!(
        lags.iter().skip(10).all(|l| *l == Some(0.0)),
        "the roster's lag after its last transactions, a second apart: {lags:?}"
    );
    assert!(
        input_lags.iter().skip(10).all(|l| *l == Some(0.0)),
        "the input's lag after the aborted transaction, a second apart: {input_lags:?}"
    );
    // The aborted records changed nothing.
    wait_for(&[("rep-a", "team-x", 100.0), ("rep-b", "team-x", 250.0)]).await;
    let board = business(&deals.metrics().await);
    assert_eq!(
        bookings(&board, "rep-a", "team-z"),
        None,
        "an aborted roster move was applied"
    );
    let log = std::fs::read_to_string(&deals.log).expect("log");
    assert!(
        !log.contains("replaced it"),
        "a consumer at its end (the roster's or the input's) was taken for one that stopped:\n{}",
        log_tail(&deals.log)
    );
    println!(
        "roster ({mode}): two transactions (3 records, 2 commit markers) read to the end; rep-b's numbers followed its move; \
         then an aborted transaction on the roster and the input counted nowhere; \
         roster lag over the 25 s after: {:?}; input lag: {:?}; roster and input consumers kept",
        lags.iter().map(|l| l.unwrap_or(-1.0)).collect::<Vec<_>>(),
        input_lags.iter().map(|l| l.unwrap_or(-1.0)).collect::<Vec<_>>()
    );
}
