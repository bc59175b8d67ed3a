//! Event to board: how long a won deal takes to show on `/metrics` and on `sales.metrics`,
//! with 1,000 deal records a second of background load on the same service.
//!
//! Each probe is one won deal of the rep `lat-probe`, produced alone; the bench then reads
//! `sales.metrics` and scrapes `/metrics` until the rep's `deals_won` count over `1h` reaches
//! the number of probes sent (scraping at most every 25 ms, so `/metrics` figures carry up to
//! 25 ms of polling). Probes are spaced at random so that they fall anywhere between two
//! ticks. Runs once per tick setting given (`MIN:MAX` milliseconds), one service each, in
//! the same run.
//!
//! Needs a broker (`scripts/kafka.sh start`) and release binaries:
//! `cargo build --release --bins && cargo run --release -p salespulse-bench --bin latency -- [probes] [MIN:MAX ...]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use salespulse_bench::broker::{
    bootstrap, cpu_seconds, create_topic, delete_topics_of, produce_all, start_deals, terminate,
    PARTITIONS,
};
use salespulse_bench::{deal_records, Rng};
use salespulse_publish::PublishFormat;

const PROBE_REP: &str = "lat-probe";
const BACKGROUND_PER_SECOND: usize = 1_000;
const BACKGROUND_REPS: u64 = 20;
const SCRAPE_EVERY: Duration = Duration::from_millis(25);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let probes: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut settings: Vec<(u64, u64)> = args
        .iter()
        .skip(1)
        .filter_map(|a| {
            let (lo, hi) = a.split_once(':')?;
            Some((lo.parse().ok()?, hi.parse().ok()?))
        })
        .collect();
    if settings.is_empty() {
        settings = vec![(100, 1000), (1000, 1000)];
    }
    println!(
        "{probes} probes per setting, {BACKGROUND_PER_SECOND} background records/s; latency in ms"
    );
    println!(
        "| min:max interval | output | median | p90 | p99 | max | service CPU-s | wall s | ticks | clock ms | export ms | commit ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (min, max) in settings {
        run(probes, min, max).await;
    }
}

async fn run(probes: usize, min: u64, max: u64) {
    let suffix = format!(
        "{}-{}-{min}",
        std::process::id(),
        chrono::Utc::now().timestamp()
    );
    let topic = format!("bench.{suffix}.deals");
    let metrics_topic = format!("bench.{suffix}.metrics");
    create_topic(&topic).await;
    create_topic(&metrics_topic).await;
    // Only reps on the roster have rep series.
    let roster = format!("bench.{suffix}.roster");
    create_topic(&roster).await;
    let members: Vec<(Vec<u8>, Vec<u8>)> = (0..BACKGROUND_REPS)
        .map(|r| format!("rep-{r:05}"))
        .chain([PROBE_REP.to_owned()])
        .map(|rep| {
            let v = serde_json::json!({ "rep_id": rep, "team_id": "team-bench" });
            (rep.into_bytes(), serde_json::to_vec(&v).unwrap_or_default())
        })
        .collect();
    produce_all(&roster, &members);
    let port = 19_500 + (std::process::id() % 400) as u16;
    let env = [
        ("SALESPULSE_PUBLISH__MIN_INTERVAL_MS", min.to_string()),
        ("SALESPULSE_PUBLISH__INTERVAL_MS", max.to_string()),
        // Only the `1h` series on /metrics (sales.metrics still carries every window): a
        // scrape of the full board would take the CPU the service is measured on.
        ("SALESPULSE_EXPOSE__WINDOWS", "[\"1h\"]".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = Service(start_deals(
        &suffix,
        &topic,
        port,
        &format!("bench-{suffix}"),
        &env,
    ));
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &url).await;

    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (topic, stop) = (topic.clone(), stop.clone());
        std::thread::spawn(move || background_load(&topic, &stop))
    };
    let outputs = consumer_at_end(&metrics_topic);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let cpu_before = cpu_seconds(child.0.id());
    let began = Instant::now();
    let mut rng = Rng::new(7 + min);
    let (mut on_metrics, mut on_topic) = (Vec::new(), Vec::new());
    for i in 1..=probes {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        let (deal, value) = probe(i);
        let sent = Instant::now();
        producer
            .send(BaseRecord::to(&topic).key(&deal).payload(&value))
            .expect("probe queued");
        let (m, t) = wait_for(&http, &url, &outputs, i, sent).await;
        on_metrics.push(m);
        on_topic.push(t);
    }
    let wall = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.0.id()) - cpu_before;
    let stages = tick_stages(&http, &url).await;
    stop.store(true, Ordering::Relaxed);
    let _ = background.join();
    terminate(&mut child.0);
    for (name, mut v) in [("/metrics", on_metrics), ("sales.metrics", on_topic)] {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {min}:{max} | {name} | {:.0} | {:.0} | {:.0} | {:.0} | {cpu:.1} | {wall:.0} | {} | {:.1} | {:.1} | {:.1} |",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            stages.ticks,
            stages.clock_ms,
            stages.export_ms,
            stages.commit_ms
        );
    }
    delete_topics_of(&suffix).await;
}

/// The service process, killed if the bench stops early.
struct Service(std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One won deal of the probe rep, occurring now.
fn probe(i: usize) -> (Vec<u8>, Vec<u8>) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let deal = format!("probe-{}-{i}", std::process::id());
    let value = serde_json::json!({
        "event_id": format!("{deal}-won"), "deal_id": deal, "rep_id": PROBE_REP,
        "stage": "closed_won", "amount": "100.00", "currency": "USD",
        "created_at": now, "occurred_at": now, "closed_at": now,
    });
    (
        deal.into_bytes(),
        serde_json::to_vec(&value).unwrap_or_default(),
    )
}

/// Milliseconds until the probe rep's `deals_won` over `1h` reaches `want` on `/metrics` and
/// on the metrics topic.
async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    outputs: &BaseConsumer,
    want: usize,
    sent: Instant,
) -> (f64, f64) {
    let (mut on_metrics, mut on_topic) = (None, None);
    let deadline = sent + Duration::from_secs(30);
    let mut last_scrape = sent;
    while on_metrics.is_none() || on_topic.is_none() {
        assert!(Instant::now() < deadline, "probe {want} not seen in 30 s");
        while let Some(Ok(m)) = outputs.poll(Duration::ZERO) {
            let r = m
                .payload()
                .and_then(|p| salespulse_publish::decode(p, PublishFormat::Json));
            let reached = r.is_some_and(|r| {
                r.scope == "rep"
                    && r.id == PROBE_REP
                    && r.metric == "deals_won"
                    && r.window == "1h"
                    && r.value >= rust_decimal::Decimal::from(want)
            });
            if reached && on_topic.is_none() {
                on_topic = Some(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }
        // A scrape renders the whole board on the service's CPU: every 25 ms at most.
        if on_metrics.is_none() && last_scrape.elapsed() >= SCRAPE_EVERY {
            last_scrape = Instant::now();
            if scraped(http, url).await >= want {
                on_metrics = Some(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (on_metrics.unwrap_or_default(), on_topic.unwrap_or_default())
}

/// The service's mean time per tick stage (`salespulse_tick_seconds`), since it started.
#[derive(Debug, Default)]
struct Stages {
    ticks: u64,
    clock_ms: f64,
    export_ms: f64,
    commit_ms: f64,
}

async fn tick_stages(http: &reqwest::Client, url: &str) -> Stages {
    let Ok(r) = http.get(format!("{url}/metrics")).send().await else {
        return Stages::default();
    };
    let body = r.text().await.unwrap_or_default();
    let value = |family: &str, stage: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(family) && l.contains(&format!("stage=\"{stage}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let mean_ms = |stage: &str| {
        let n = value("salespulse_tick_seconds_count{", stage);
        if n > 0.0 {
            value("salespulse_tick_seconds_sum{", stage) / n * 1000.0
        } else {
            0.0
        }
    };
    Stages {
        ticks: value("salespulse_tick_seconds_count{", "clock") as u64,
        clock_ms: mean_ms("clock"),
        export_ms: mean_ms("export"),
        commit_ms: mean_ms("commit"),
    }
}

/// The probe rep's `deals_won` over `1h` on `/metrics` (0 while absent).
async fn scraped(http: &reqwest::Client, url: &str) -> usize {
    let Ok(r) = http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    let body = r.text().await.unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("sales_rep_deals_won{"))
        .filter(|l| l.contains(&format!("rep=\"{PROBE_REP}\"")) && l.contains("window=\"1h\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as usize)
        .max()
        .unwrap_or(0)
}

/// Deal records of `BACKGROUND_REPS` reps at `BACKGROUND_PER_SECOND`, in batches every 10 ms,
/// until `stop`; every record a new event.
fn background_load(topic: &str, stop: &AtomicBool) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let per_batch = BACKGROUND_PER_SECOND / 100;
    let began = Instant::now();
    let mut batch = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = chrono::Utc::now().timestamp_millis();
        let recs = deal_records(
            per_batch,
            2_000,
            BACKGROUND_REPS,
            86_400_000,
            now,
            false,
            batch,
        );
        for (i, (k, v)) in recs.into_iter().enumerate() {
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&v) else {
                continue;
            };
            v["event_id"] = format!("bg-{batch}-{i}").into();
            let v = serde_json::to_vec(&v).unwrap_or_default();
            let _ = producer.send(BaseRecord::to(topic).key(&k).payload(&v));
        }
        batch += 1;
        let due = began + Duration::from_millis(10 * batch);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let _ = producer.flush(Duration::from_secs(10));
}

fn consumer_at_end(topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("bench-latency-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    // From the end as it is now, resolved here rather than at the first fetch, which may come
    // after the first probe's record.
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    c
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "service not ready in 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
