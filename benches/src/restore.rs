//! Start-up cost of the deals service over the same history: restoring the newest snapshot
//! against replaying all input (snapshots off), each measured from process start to
//! `/readyz`, alternating, three times each; medians and their ratio. A third start, on empty
//! topics of its own, measures what every start costs with nothing to restore (process start,
//! connecting, the transactional producer, the take-over): the fastest any restore could be,
//! and so the highest ratio one could reach against this replay.
//!
//! With `--divided`, the service runs in divided ingest (`divide_input = true`): a start
//! restores every input partition from its own snapshot (or replays it) and reads the cells
//! topic back, as an instance does that takes partitions over.
//!
//! Last, three hand-overs: two instances share the group, one stops, and the other takes over
//! what it held — in the default mode its slots (the state is whole in every instance: only the
//! series are read back), with `--divided` its input partitions (restored from their
//! snapshots, the new slots' cells read back; what the survivor held before and committed as
//! the rebalance began, it keeps). Each is timed from the survivor's log, from the rebalance
//! reaching it to serving everything.
//!
//! Needs a broker (`scripts/kafka.sh start`) and release binaries:
//! `cargo build --release --bins && cargo run --release -p salespulse-bench --bin restore -- [records] [--divided]`

use std::time::{Duration, Instant};

use salespulse_bench::broker::{
    committed, cpu_seconds, create_topic, delete_topics_of, group_watcher, metrics_text,
    produce_all, start_deals, start_deals_logged, terminate,
};
use salespulse_bench::deal_records;

const ROUNDS: usize = 3;

async fn ready_after(port: u16, started: Instant) -> f64 {
    let deadline = started + Duration::from_secs(900);
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        assert!(Instant::now() < deadline, "not ready within 900 s");
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds from `started` until the board serves at least `series` series and the instance
/// is ready, each polled every 20 ms: (serving, ready).
async fn serving_and_ready(port: u16, started: Instant, series: f64) -> (f64, f64) {
    let deadline = started + Duration::from_secs(900);
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut serving = None;
    loop {
        assert!(Instant::now() < deadline, "not ready within 900 s");
        let board = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            // Not listening yet.
            Err(_) => String::new(),
        };
        let served = board
            .lines()
            .find(|l| l.starts_with("salespulse_board_series"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if serving.is_none() && served.is_some_and(|n| n >= series) {
            serving = Some(started.elapsed().as_secs_f64());
        }
        if let Some(serving) = serving {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return (serving, started.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gauge(port: u16, family: &str) -> f64 {
    let text = metrics_text(port).await;
    text.lines()
        .find(|l| l.starts_with(family))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The series on the board once their count is above zero and the same over a second.
async fn whole_board(port: u16) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = f64::NAN;
    loop {
        let now = gauge(port, "salespulse_board_series").await;
        if now > 0.0 && now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the board's series did not settle within 60 s (last {now})"
        );
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Slots of the group (`topics.slot_count` in config/salespulse.toml): a survivor holds them all.
const SLOTS: f64 = 12.0;

/// One hand-over in group `group`: instances A and B start (B logging to a file of its own),
/// and once both hold a share, A stops (SIGTERM: it commits, writes its snapshot and leaves the
/// group). Returns B's seconds, from its log, from giving up its share (divided: from the
/// group's asking for it, before B commits its state) to serving all of it on `/metrics`, and
/// to the end of the take-over or rebuild.
async fn handover(
    suffix: &str,
    topic: &str,
    group: &str,
    mode: &[(&str, &str)],
    (pa, pb): (u16, u16),
    round: usize,
) -> (f64, f64) {
    let log = std::env::temp_dir().join(format!("bench-handover-{suffix}-{round}.log"));
    let _ = std::fs::remove_file(&log);
    let t = Instant::now();
    let mut a = start_deals(suffix, topic, pa, group, mode);
    ready_after(pa, t).await;
    let t = Instant::now();
    let mut b = start_deals_logged(suffix, topic, pb, group, mode, Some(&log));
    ready_after(pb, t).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (sa, sb) = (
            gauge(pa, "salespulse_owned_slots").await,
            gauge(pb, "salespulse_owned_slots").await,
        );
        let ready = gauge(pa, "salespulse_ready").await + gauge(pb, "salespulse_ready").await;
        if sa > 0.0 && sb > 0.0 && sa + sb == SLOTS && ready == 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no share for each instance within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    terminate(&mut a);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (serving, done) = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .skip(before)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let message = |e: &serde_json::Value| e["message"].as_str().unwrap_or_default().to_owned();
        let at = |e: &serde_json::Value| {
            chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap_or_default())
                .map(|t| t.timestamp_micros() as f64 / 1e6)
                .unwrap_or(f64::NAN)
        };
        let gave_up = events
            .iter()
            .position(|e| message(e).starts_with("gave up every"));
        let done = gave_up.and_then(|i| {
            events[i..].iter().find(|e| {
                let m = message(e);
                m == "took over the series of the assigned slots" || m == "built from the topics"
            })
        });
        if let (Some(i), Some(d)) = (gave_up, done) {
            // Divided ingest gives its share up once it has committed its state: timed from
            // the group's request.
            let asked = at(&events[i]) - events[i]["handing_back_s"].as_f64().unwrap_or(0.0);
            let done = at(d) - asked;
            // The board serves the slots' series `serving_s` into a take-over (default mode) or
            // a rebuild (divided) of `seconds`: in the default mode from the instance's own
            // state, before the metrics topic is read back and what differs published; divided,
            // from the metrics topic read back, before the partitions' state is built.
            let serving = match (d["serving_s"].as_f64(), d["seconds"].as_f64()) {
                (Some(s), Some(all)) => done - all + s,
                _ => done,
            };
            let parts: Vec<String> = [
                "serving_s",
                "seconds",
                "previous_owners_s",
                "board_s",
                "leadership_s",
                "kept_input",
                "kept_slots",
                "input_seconds",
                "cells_seconds",
                "board_seconds",
                "served",
                "committed_s",
                "series",
                "metrics_records",
                "contributions",
                "replayed",
            ]
            .iter()
            .filter_map(|k| d[*k].as_f64().map(|v| format!("{k} {v:.3}")))
            .collect();
            println!(
                "  hand-over {}: serving at {serving:.3} s, done at {done:.3} s; {}",
                round + 1,
                parts.join(", ")
            );
            break (serving, done);
        }
        assert!(
            Instant::now() < deadline,
            "no hand-over in {} within 120 s",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(gauge(pb, "salespulse_owned_slots").await, SLOTS);
    terminate(&mut b);
    // Kept, as the first instance's log is, when a run asks for service logs.
    if std::env::var_os("BENCH_SERVICE_LOG").is_none() {
        let _ = std::fs::remove_file(&log);
    }
    (serving, done)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let divided = args.iter().any(|a| a == "--divided");
    let mode: &[(&str, &str)] = match divided {
        true => &[("SALESPULSE_DEALS__DIVIDE_INPUT", "true")],
        false => &[],
    };
    let suffix = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp());
    let topic = format!("bench.{suffix}.deals");
    let group = format!("bench-restore-{suffix}");
    let port = 19_500 + (std::process::id() % 400) as u16;
    create_topic(&topic).await;
    let now = chrono::Utc::now().timestamp_millis();
    let deals = (n / 5) as u64;
    let recs = deal_records(n, deals, 1_000, 30 * 86_400_000, now, false, 11);
    produce_all(&topic, &recs);
    drop(recs);
    let how = if divided {
        "divided ingest"
    } else {
        "default mode"
    };
    println!("history: {n} JSON deal records, {deals} deals, 1,000 reps, 30 days; {how}");

    // The first run processes everything, then leaves a snapshot at SIGTERM.
    let mut child = start_deals(&suffix, &topic, port, &group, mode);
    let watcher = match divided {
        true => group_watcher(&format!("{group}-deals-divided")),
        false => group_watcher(&group),
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    while committed(&watcher, &topic) < n as i64 {
        assert!(Instant::now() < deadline, "first run not done within 900 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What every later start serves once its board is whole: the count once it stands still
    // (the offsets may be committed a tick before the board has every series).
    let series = whole_board(port).await;
    terminate(&mut child);

    let mut replay = Vec::new();
    // From the snapshot: serving every series (divided ingest serves the metrics topic's
    // values while it builds its state), ahead of being ready.
    let mut snapshot_serving = Vec::new();
    let mut snapshot = Vec::new();
    // The service's own measure of its restore, without process start and group join.
    let (mut replay_in, mut snapshot_in) = (Vec::new(), Vec::new());
    // The service's CPU-seconds from its start until ready: the work of a start, which on
    // two cores shared with the broker bounds its wall time.
    let (mut replay_cpu, mut snapshot_cpu) = (Vec::new(), Vec::new());
    let mut bytes = 0.0;
    let empty_suffix = format!("{suffix}-empty");
    let empty_topic = format!("bench.{empty_suffix}.deals");
    create_topic(&empty_topic).await;
    let mut empty = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let off = [("SALESPULSE_DEALS__SNAPSHOT_INTERVAL_SECONDS", "0")];
        let env: Vec<(&str, &str)> = mode.iter().chain(&off).copied().collect();
        let mut child = start_deals(&suffix, &topic, port, &group, &env);
        replay.push(ready_after(port, t).await);
        replay_cpu.push(cpu_seconds(child.id()));
        replay_in.push(gauge(port, "salespulse_restore_seconds").await);
        let replayed = gauge(port, "salespulse_restore_replayed_records").await;
        assert!(replayed >= n as f64, "replayed only {replayed} records");
        terminate(&mut child);

        let t = Instant::now();
        let mut child = start_deals(&suffix, &topic, port, &group, mode);
        let (serving, ready) = serving_and_ready(port, t, series).await;
        snapshot_serving.push(serving);
        snapshot.push(ready);
        snapshot_cpu.push(cpu_seconds(child.id()));
        snapshot_in.push(gauge(port, "salespulse_restore_seconds").await);
        assert_eq!(
            gauge(port, "salespulse_restore_replayed_records").await,
            0.0
        );
        bytes = gauge(port, "salespulse_snapshot_bytes").await;
        terminate(&mut child);

        let t = Instant::now();
        let empty_group = format!("{group}-empty");
        let mut child = start_deals(&empty_suffix, &empty_topic, port, &empty_group, mode);
        empty.push(ready_after(port, t).await);
        terminate(&mut child);
    }
    let (r, s) = (median(replay), median(snapshot));
    let ss = median(snapshot_serving);
    println!(
        "start to serving every series ({series}) from the snapshot, median of {ROUNDS}: {ss:.2} s; \
         full replay (start to ready) / this = {:.1}x",
        r / ss
    );
    let (ri, si) = (median(replay_in), median(snapshot_in));
    println!(
        "start to ready, median of {ROUNDS}: full replay {r:.2} s, from the snapshot ({:.1} MiB) {s:.2} s; ratio {:.1}x",
        bytes / 1_048_576.0,
        r / s
    );
    println!(
        "restore as the service measures it (salespulse_restore_seconds), median of {ROUNDS}: \
         full replay {ri:.2} s, from the snapshot {si:.2} s; ratio {:.1}x",
        ri / si
    );
    let e = median(empty);
    println!(
        "start to ready with nothing to restore (empty topics), median of {ROUNDS}: {e:.2} s; \
         full replay / this = {:.1}x, the most any restore could reach here",
        r / e
    );
    let (rc, sc) = (median(replay_cpu), median(snapshot_cpu));
    println!(
        "CPU-seconds of the service from start to ready, median of {ROUNDS}: full replay {rc:.2}, \
         from the snapshot {sc:.2}; ratio {:.1}x",
        rc / sc
    );
    let (mut serving, mut done) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (s, d) = handover(&suffix, &topic, &group, mode, (port, port + 1), round).await;
        serving.push(s);
        done.push(d);
    }
    let (h, d) = (median(serving), median(done));
    println!(
        "hand-over ({}), median of {ROUNDS}, from giving up its share: serving every series \
         on /metrics after {h:.3} s, done (the metrics topic up to date) after {d:.3} s; \
         full replay / serving = {:.1}x, full replay / done = {:.1}x",
        if divided {
            "the input partitions of an instance that stopped, restored from their snapshots"
        } else {
            "the slots of an instance that stopped, its state already whole in the other"
        },
        r / h,
        r / d
    );
    delete_topics_of(&suffix).await;
}
