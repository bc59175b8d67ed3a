//! The targets service end to end on a real broker: targets imported from CSV, actuals from
//! the deals and activities services' metrics topic, attainment, pace, gap, projection, ranks
//! and team shares checked against values recomputed here; a target changed mid-period, a
//! target deleted, a bad target dead-lettered, and a restart; commission estimates from a
//! compensation plan imported from CSV.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use salespulse_e2e::*;
use serde_json::json;

fn rfc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The current calendar quarter (UTC, fiscal year from January): label, start, end.
fn quarter(now: i64) -> (String, i64, i64) {
    let d = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    let q = (d.month() - 1) / 3;
    let start = NaiveDate::from_ymd_opt(d.year(), q * 3 + 1, 1).expect("date");
    let end = start
        .checked_add_months(chrono::Months::new(3))
        .expect("date");
    let ts = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp()
    };
    (format!("{}-Q{}", d.year(), q + 1), ts(start), ts(end))
}

fn import(topics: &Topics, csv: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("{}-targets.csv", topics.suffix));
    std::fs::write(&path, csv).expect("csv written");
    targets_import(topics, &path).output().expect("import runs")
}

fn value(m: &BTreeMap<String, f64>, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.get(&metric_key(family, labels)).copied()
}

fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() <= tol * b.abs().max(1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_pace_and_leaderboards_end_to_end() {
    require_broker();
    let topics = Topics::unique("targets");
    let group = format!("g-{}", topics.suffix);
    // Calendar time makes the elapsed share easy to recompute here.
    set_service_env("targets", "SALESPULSE_CALENDAR__BUSINESS_DAYS", "false");
    set_service_env("targets", "SALESPULSE_ALERTS__HOLD_SECONDS", "0");
    set_service_env("targets", "SALESPULSE_ALERTS__MIN_ELAPSED", "0");
    let (dport, aport, tport) = (free_port(), free_port(), free_port());
    let mut deals = Service::start("deals", &topics, dport, &group);
    let mut acts = Service::start("activities", &topics, aport, &group);
    let mut targets = Service::start("targets", &topics, tport, &group);
    deals.wait_ready(Duration::from_secs(60)).await;
    acts.wait_ready(Duration::from_secs(60)).await;
    targets.wait_ready(Duration::from_secs(60)).await;

    let now = Utc::now().timestamp();
    let (q, q_start, q_end) = quarter(now);
    let p = producer();
    for (r, t) in [
        ("rep-a", "team-x"),
        ("rep-b", "team-x"),
        ("rep-c", "team-y"),
    ] {
        let v = json!({"rep_id": r, "team_id": t, "active": true});
        produce_json(&p, &topics.roster, r, &v).await;
    }
    // Won deals closed a minute ago: rep-a 300, rep-b 500 (two deals), rep-c 100.
    let won = [
        ("d1", "rep-a", "300"),
        ("d2", "rep-b", "200"),
        ("d3", "rep-b", "300"),
        ("d4", "rep-c", "100"),
    ];
    for (i, (deal, rep, amount)) in won.iter().enumerate() {
        let v = json!({"event_id": format!("e{i}"), "deal_id": deal, "rep_id": rep, "stage": "closed_won",
            "amount": amount, "currency": "USD", "created_at": rfc(now - 3600), "occurred_at": rfc(now - 60)});
        produce_json(&p, &topics.deals, deal, &v).await;
    }
    // An open deal expected to close today: weighted 0.8 x 200 = 160 in every current period.
    let open = json!({"event_id": "e9", "deal_id": "d9", "rep_id": "rep-a", "stage": "negotiation",
        "amount": "200", "currency": "USD", "created_at": rfc(now - 600), "occurred_at": rfc(now - 60),
        "expected_close_date": Utc.timestamp_opt(now, 0).single().expect("time").date_naive().to_string()});
    produce_json(&p, &topics.deals, "d9", &open).await;
    // rep-c's bookings target puts its pace at 0.4, well under the 0.8 threshold, whatever
    // the day of the quarter; its attainment (0.4 x elapsed share) stays under 50 %.
    let share0 = (now - q_start) as f64 / (q_end - q_start) as f64;
    let c_target = format!("{:.2}", 100.0 / (0.4 * share0));
    // Team x's plan also holds the last and the next quarter: stored, not shown.
    let (prev_q, next_q) = (quarter(q_start - 86_400).0, quarter(q_end).0);
    let csv = format!(
        "scope,id,metric,kind,period,value,currency\n\
         rep,rep-a,bookings,,{q},1000,USD\n\
         rep,rep-b,bookings,,{q},925.93,EUR\n\
         team,team-x,bookings,,{prev_q},3000,USD\n\
         team,team-x,bookings,,{q},4000,USD\n\
         team,team-x,bookings,,{next_q},5000,USD\n\
         org,org,bookings,,{q},10000,USD\n\
         rep,rep-c,deals_won,,{q},4,\n\
         rep,rep-c,bookings,,{q},{c_target},USD\n"
    );
    let out = import(&topics, &csv);
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = import(
        &topics,
        "scope,id,metric,kind,period,value,currency\nrep,rep-a,bookings,,2026-Q9,1,USD\n",
    );
    assert!(!bad.status.success(), "a file with a bad row is refused");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("invalid_period"),
        "{stderr}"
    );

    // Expected values, recomputed from the records and targets above.
    let check = |m: &BTreeMap<String, f64>, rep_b_target: f64| -> Vec<String> {
        let t = Utc::now().timestamp();
        let share = (t - q_start) as f64 / (q_end - q_start) as f64;
        let mut diffs = Vec::new();
        // Every quarter target of team x on the board, added up, is the current one's.
        let quarters: f64 = m
            .iter()
            .filter(|(k, _)| {
                k.starts_with("sales_team_target{")
                    && k.contains("team=\"team-x\"")
                    && k.contains("period_type=\"quarter\"")
            })
            .map(|(_, v)| v)
            .sum();
        if quarters != 4000.0 {
            diffs.push(format!(
                "team-x's quarter targets add up to {quarters}, not the current quarter's 4000 \
                 ({prev_q} and {next_q} are stored, not shown)"
            ));
        }
        let mut expect = |family: &str, labels: &[(&str, &str)], want: f64, tol: f64| {
            let got = value(m, family, labels);
            if !close(got, want, tol) {
                diffs.push(format!("{family}{labels:?}: got {got:?}, want {want}"));
            }
        };
        let a = [
            ("rep", "rep-a"),
            ("team", "team-x"),
            ("metric", "bookings"),
            ("period", q.as_str()),
            ("period_type", "quarter"),
        ];
        expect("sales_rep_target", &a, 1000.0, 1e-12);
        expect("sales_rep_attainment_ratio", &a, 0.3, 1e-12);
        expect("sales_rep_gap", &a, 700.0, 1e-12);
        expect("sales_rep_expected_to_date", &a, 1000.0 * share, 1e-3);
        expect("sales_rep_pace_ratio", &a, 300.0 / (1000.0 * share), 1e-3);
        expect("sales_rep_projected", &a, 300.0 / share, 1e-3);
        expect("sales_rep_forecast", &a, 300.0 + 160.0, 1e-12);
        expect("sales_rep_pipeline_coverage", &a, 200.0 / 700.0, 1e-12);
        let b = [
            ("rep", "rep-b"),
            ("team", "team-x"),
            ("metric", "bookings"),
            ("period", q.as_str()),
            ("period_type", "quarter"),
        ];
        expect("sales_rep_target", &b, rep_b_target, 1e-12);
        expect("sales_rep_attainment_ratio", &b, 500.0 / rep_b_target, 1e-9);
        let x = [
            ("team", "team-x"),
            ("metric", "bookings"),
            ("period", q.as_str()),
            ("period_type", "quarter"),
        ];
        expect("sales_team_target", &x, 4000.0, 1e-12);
        expect("sales_team_attainment_ratio", &x, 800.0 / 4000.0, 1e-12);
        expect("sales_team_forecast", &x, 800.0 + 160.0, 1e-12);
        expect("sales_team_pipeline_coverage", &x, 200.0 / 3200.0, 1e-12);
        // Team x's distribution: rep-a at 0.3 and rep-b at 500 / its target (exactly 50 % at
        // 1000, which counts).
        let b_ratio = 500.0 / rep_b_target;
        for (threshold, pct) in [("50", 0.5), ("75", 0.75), ("100", 1.0)] {
            let n = [0.3, b_ratio].iter().filter(|r| **r >= pct).count() as f64;
            let l = [("team", "team-x"), ("threshold", threshold)];
            expect("sales_team_reps_attaining", &l, n, 0.0);
            expect("sales_team_reps_attaining_ratio", &l, n / 2.0, 1e-12);
        }
        expect(
            "sales_team_attainment_median",
            &[("team", "team-x")],
            (0.3 + b_ratio) / 2.0,
            1e-12,
        );
        let o = [
            ("metric", "bookings"),
            ("period", q.as_str()),
            ("period_type", "quarter"),
        ];
        expect("sales_org_attainment_ratio", &o, 900.0 / 10000.0, 1e-12);
        expect("sales_org_gap", &o, 9100.0, 1e-12);
        expect("sales_org_forecast", &o, 900.0 + 160.0, 1e-12);
        let c = [
            ("rep", "rep-c"),
            ("team", "team-y"),
            ("metric", "deals_won"),
            ("period", q.as_str()),
            ("period_type", "quarter"),
        ];
        expect("sales_rep_attainment_ratio", &c, 0.25, 1e-12);
        expect(
            "sales_period_elapsed_ratio",
            &[("period", q.as_str()), ("period_type", "quarter")],
            share,
            1e-3,
        );
        fn rank<'a>(rep: &'a str, team: &'a str, among: &'a str) -> [(&'a str, &'a str); 5] {
            [
                ("rep", rep),
                ("team", team),
                ("metric", "bookings"),
                ("window", "qtd"),
                ("among", among),
            ]
        }
        fn share_of(rep: &str) -> [(&str, &str); 4] {
            [
                ("rep", rep),
                ("team", "team-x"),
                ("metric", "bookings"),
                ("window", "qtd"),
            ]
        }
        expect("sales_rep_rank", &rank("rep-b", "team-x", "org"), 1.0, 0.0);
        expect("sales_rep_rank", &rank("rep-a", "team-x", "org"), 2.0, 0.0);
        expect("sales_rep_rank", &rank("rep-c", "team-y", "org"), 3.0, 0.0);
        expect("sales_rep_rank", &rank("rep-c", "team-y", "team"), 1.0, 0.0);
        expect("sales_rep_team_share", &share_of("rep-a"), 0.375, 1e-12);
        expect("sales_rep_team_share", &share_of("rep-b"), 0.625, 1e-12);
        diffs
    };
    // 925.93 EUR at 1.08 = 1000.00 USD.
    converge(&targets, |m| check(m, 1000.0)).await;
    // Stored: all eight targets, the quarters before and after this one included. The gauge
    // is set after a tick's series are exposed, so it may come a tick after them.
    converge(&targets, |m| {
        let stored: Vec<f64> = m
            .iter()
            .filter(|(k, _)| {
                k.starts_with("salespulse_state_entries{") && k.contains("kind=\"targets\"")
            })
            .map(|(_, v)| *v)
            .collect();
        if stored == [8.0] {
            Vec::new()
        } else {
            vec![format!("targets stored: {stored:?}, want [8.0]")]
        }
    })
    .await;
    println!(
        "targets: attainment, pace, gap, projection, ranks and shares match; 8 targets stored, \
         {prev_q} and {next_q} not shown"
    );

    commission_from_an_imported_plan(&topics, &targets, q_start, q_end).await;
    // A plan record that is not a plan: dead-lettered once, like a bad target (checked below).
    produce(
        &p,
        &topics.plans,
        Some("rep-z/quarter"),
        Some(b"{\"plan\":\"x\",\"rep\":\"rep-z\"}"),
    )
    .await;

    // A target changed mid-period, another deleted, and a bad record on the topic.
    let out = import(
        &topics,
        &format!("scope,id,metric,kind,period,value,currency\nrep,rep-b,bookings,,{q},2000,USD\n"),
    );
    assert!(out.status.success());
    produce(
        &p,
        &topics.targets,
        Some(&format!("org/org/bookings/{q}")),
        None,
    )
    .await;
    produce(&p, &topics.targets, Some("rep/rep-z/bookings/x"), Some(b"{\"scope\":\"rep\",\"id\":\"rep-z\",\"metric\":\"bookings\",\"period\":\"2026-Q9\",\"value\":1}")).await;
    converge(&targets, |m| {
        let mut d: Vec<String> = check(m, 2000.0)
            .into_iter()
            .filter(|x| !x.starts_with("sales_org_"))
            .collect();
        if value(
            m,
            "sales_org_target",
            &[
                ("metric", "bookings"),
                ("period", q.as_str()),
                ("period_type", "quarter"),
            ],
        )
        .is_some()
        {
            d.push("the deleted org target is still exposed".into());
        }
        d
    })
    .await;
    println!("targets: a changed target and a deleted target are followed");

    // A restart rebuilds the same board from the two topics.
    assert!(targets.terminate().success());
    let mut targets = Service::start("targets", &topics, tport, &group);
    targets.wait_ready(Duration::from_secs(60)).await;
    // A second instance of the group stands by from now on: it decides nothing while the
    // first serves (every alert and celebration below is checked to be on its topic once).
    let mut standby = Service::start("targets", &topics, free_port(), &group);
    converge(&targets, |m| {
        check(m, 2000.0)
            .into_iter()
            .filter(|x| !x.starts_with("sales_org_"))
            .collect()
    })
    .await;
    let text = targets.metrics().await;
    let complaints = promtool_check(&text);
    assert!(
        complaints.trim().is_empty(),
        "promtool check metrics: {complaints}"
    );
    // Alerts and celebrations, exactly once per transition across the restart.
    let c_alert = format!("pace/rep/rep-c/bookings/{q}");
    wait_for(&topics.alerts, |recs| {
        recs.iter()
            .any(|(k, v)| k == &c_alert && v["state"] == "firing")
    })
    .await;
    // rep-c's target drops: its pace jumps above threshold + margin, and its attainment passes
    // every milestone.
    let out = import(
        &topics,
        &format!("scope,id,metric,kind,period,value,currency\nrep,rep-c,bookings,,{q},10,USD\n"),
    );
    assert!(out.status.success());
    wait_for(&topics.alerts, |recs| {
        recs.iter()
            .any(|(k, v)| k == &c_alert && v["state"] == "resolved")
    })
    .await;
    // rep-a overtakes rep-b at the top of team-x: a new leader, and rep-a's milestones.
    let big = json!({"event_id": "e10", "deal_id": "d10", "rep_id": "rep-a", "stage": "closed_won",
        "amount": "1000", "currency": "USD", "created_at": rfc(now - 3600), "occurred_at": rfc(now - 30)});
    produce_json(&p, &topics.deals, "d10", &big).await;
    let leader = format!("new_leader/team-x/bookings/{q}/rep-a");
    wait_for(&topics.celebrations, |recs| {
        recs.iter().any(|(k, _)| k == &leader)
    })
    .await;
    assert!(
        !standby.is_ready().await,
        "the second instance stands by while the first serves"
    );
    // The serving instance dies; the standby takes the lease over after the session timeout.
    let killed = Instant::now();
    targets.kill();
    standby.wait_ready(Duration::from_secs(60)).await;
    let took_over = killed.elapsed().as_secs_f64();
    let targets = standby;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = read_json(&topics.alerts);
    let c: Vec<&str> = alerts
        .iter()
        .filter(|(k, _)| k == &c_alert)
        .map(|(_, v)| v["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        c,
        ["firing", "resolved"],
        "rep-c's alert fired once and resolved once"
    );
    for (k, v) in &alerts {
        let n = alerts
            .iter()
            .filter(|(k2, v2)| k2 == k && v2["state"] == v["state"])
            .count();
        assert!(
            n <= 1 || v["state"] == "resolved",
            "{k} {} twice",
            v["state"]
        );
    }
    let celebrations: Vec<String> = read_json(&topics.celebrations)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut want: Vec<String> = ["50", "75", "100", "150"]
        .iter()
        .map(|m| format!("milestone/rep/rep-c/bookings/{q}/{m}"))
        .chain(
            ["50", "75", "100"]
                .iter()
                .map(|m| format!("milestone/rep/rep-a/bookings/{q}/{m}")),
        )
        .chain([
            format!("milestone/rep/rep-b/bookings/{q}/50"),
            leader.clone(),
        ])
        .collect();
    want.sort();
    let mut got = celebrations.clone();
    got.sort();
    assert_eq!(
        got, want,
        "every celebration exactly once, none repeated by the restart"
    );
    println!(
        "targets: {} alert records, {} celebrations, no duplicates through a second instance \
         standing by and taking over {took_over:.1} s after the first was SIGKILLed",
        alerts.len(),
        celebrations.len()
    );

    let dlq: Vec<_> = read_topic(&topics.deadletter)
        .into_iter()
        .filter(|r| r.headers.get("source.topic") == Some(&topics.targets))
        .collect();
    assert_eq!(
        dlq.len(),
        1,
        "the bad target is dead-lettered once, not again after the restart"
    );
    assert_eq!(dlq[0].headers["reason"], "invalid_period");
    let plan_dlq: Vec<_> = read_topic(&topics.deadletter)
        .into_iter()
        .filter(|r| r.headers.get("source.topic") == Some(&topics.plans))
        .collect();
    assert_eq!(plan_dlq.len(), 1, "the bad plan is dead-lettered once");
    assert_eq!(plan_dlq[0].headers["reason"], "invalid_json");
    println!(
        "targets: restart rebuilds the same values; 1 dead letter (invalid_period), 1 of a plan \
         (invalid_json); promtool clean"
    );

    // rep-c moves to team-x. An open deal and two calls that named team-y stay there, so most
    // of rep-c's series are left under team-y (36 against 27); its targets and ranks follow the
    // roster all the same.
    let open_y = json!({"event_id": "e20", "deal_id": "d20", "rep_id": "rep-c", "team_id": "team-y",
        "stage": "proposal", "amount": "50", "currency": "USD", "created_at": rfc(now - 600),
        "occurred_at": rfc(now - 60)});
    produce_json(&p, &topics.deals, "d20", &open_y).await;
    for i in 0..2 {
        let call = json!({"event_id": format!("c{i}"), "rep_id": "rep-c", "team_id": "team-y",
            "kind": "call", "occurred_at": rfc(now - 120 + i)});
        produce_json(&p, &topics.activities, "rep-c", &call).await;
    }
    let moved = json!({"rep_id": "rep-c", "team_id": "team-x", "active": true});
    produce_json(&p, &topics.roster, "rep-c", &moved).await;
    converge(&deals, |m| {
        let mut d = Vec::new();
        for (family, team, want) in [
            ("sales_rep_member", "team-x", Some(1.0)),
            ("sales_rep_member", "team-y", None),
        ] {
            let got = value(m, family, &[("rep", "rep-c"), ("team", team)]);
            if got != want {
                d.push(format!("{family} rep-c {team}: got {got:?}, want {want:?}"));
            }
        }
        let qtd = |family: &str, team: &str| {
            value(
                m,
                family,
                &[("rep", "rep-c"), ("team", team), ("window", "qtd")],
            )
        };
        if qtd("sales_rep_bookings", "team-x") != Some(100.0) {
            d.push("rep-c's won deal follows it to team-x".into());
        }
        if qtd("sales_rep_pipeline_created", "team-y") != Some(50.0) {
            d.push("the deal that named team-y stays there".into());
        }
        d
    })
    .await;
    let rep_c_target = [
        ("rep", "rep-c"),
        ("team", "team-x"),
        ("metric", "bookings"),
        ("period", q.as_str()),
        ("period_type", "quarter"),
    ];
    let rep_c_rank = [
        ("rep", "rep-c"),
        ("team", "team-x"),
        ("metric", "bookings"),
        ("window", "qtd"),
        ("among", "team"),
    ];
    converge(&targets, |m| {
        let mut d = Vec::new();
        if value(m, "sales_rep_target", &rep_c_target) != Some(10.0) {
            d.push(format!("no sales_rep_target{rep_c_target:?} = 10"));
        }
        // 100 against rep-a's 1300 and rep-b's 500 in team-x.
        if value(m, "sales_rep_rank", &rep_c_rank) != Some(3.0) {
            d.push(format!("no sales_rep_rank{rep_c_rank:?} = 3"));
        }
        d
    })
    .await;
    println!("targets: a rep moved by the roster is ranked and targeted under its new team");
    drop(deals);
    drop(acts);
}

/// What the plan of [`commission_from_an_imported_plan`] pays at `attainment` (1 = 100 %),
/// worked out by hand from its terms: 0–50 % at 0.6 × OTV, 50–100 % at 1.4, above at 2, half
/// pay below 25 %, at most 2.5 × OTV, OTV 20,000.
fn ae_plan_pays(attainment: f64) -> f64 {
    let p = (attainment * 100.0).max(0.0);
    let share_of_otv =
        0.6 * p.min(50.0) + 1.4 * (p.min(100.0) - 50.0).max(0.0) + 2.0 * (p - 100.0).max(0.0);
    let factor = if p < 25.0 { 0.5 } else { 1.0 };
    (20_000.0 * share_of_otv / 100.0 * factor).min(50_000.0)
}

/// Imports a plan for rep-a and rep-b (a file with a bad row first loads nothing) and checks
/// their commission: rep-a has 300 of bookings against a target of 1000, rep-b 500 against
/// 1000.00 (925.93 EUR).
async fn commission_from_an_imported_plan(
    topics: &Topics,
    targets: &Service,
    q_start: i64,
    q_end: i64,
) {
    let import_plan = |csv: &str| {
        let path = std::env::temp_dir().join(format!("{}-plan.csv", topics.suffix));
        std::fs::write(&path, csv).expect("csv written");
        plans_import(topics, &path)
            .output()
            .expect("import-plan runs")
    };
    let header = "plan,reps,otv,currency,metric,period_type,tier_from,tier_to,rate,decelerator_below,decelerator_factor,cap\n";
    let plan = format!(
        "{header}\
         ae,rep-a,20000,USD,bookings,quarter,0,50,0.6,25,0.5,2.5\n\
         ae,rep-b,,,,,50,100,1.4,,,\n\
         ae,,,,,,100,,2,,,\n"
    );
    // The same plan with a gap between its tiers, and a good plan for rep-c: nothing loads.
    let bad = import_plan(&format!(
        "{}sdr,rep-c,1000,USD,,month,0,,1,,,\n",
        plan.replace(",50,100,1.4,", ",60,100,1.4,")
    ));
    assert!(
        !bad.status.success(),
        "a plan file with a bad row is refused"
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("line 3: invalid_tiers") && stderr.contains("nothing written"),
        "{stderr}"
    );
    let out = import_plan(&plan);
    assert!(
        out.status.success(),
        "import-plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<String> = read_json(&topics.plans)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        ["rep-a/quarter", "rep-b/quarter"],
        "only the good file's plans"
    );
    let period = quarter(q_start).0;
    // Earned: 30 % attained, 30 x 0.6 = 18 % of 20,000; rep-b 50 x 0.6 = 30 %.
    let earned = [("rep-a", 0.3, 3600.0), ("rep-b", 0.5, 6000.0)];
    for (rep, attainment, want) in earned {
        assert_eq!(ae_plan_pays(attainment), want, "{rep}");
    }
    converge(targets, |m| {
        // The board was computed at the last tick, up to a second before it was read.
        let now = Utc::now().timestamp();
        let share = |t: i64| (t - q_start) as f64 / (q_end - q_start) as f64;
        let labels = |rep: &'static str| {
            [
                ("rep", rep),
                ("team", "team-x"),
                ("period_type", "quarter"),
                ("period", period.as_str()),
            ]
        };
        let mut d = Vec::new();
        for (rep, _, want) in earned {
            let got = value(m, "sales_rep_commission_earned", &labels(rep));
            if got != Some(want) {
                d.push(format!("{rep} earned {got:?}, want {want}"));
            }
        }
        // Projected: at the run rate, 300 / elapsed share of 1000, paid by the plan; between
        // its values a few seconds ago and now, to the cent.
        let (lo, hi) = (
            ae_plan_pays(0.3 / share(now)),
            ae_plan_pays(0.3 / share(now - 3)),
        );
        let got = value(m, "sales_rep_commission_projected", &labels("rep-a"));
        if !got.is_some_and(|g| g >= lo - 0.005 && g <= hi + 0.005) {
            d.push(format!("rep-a projected {got:?}, want {lo:.2} to {hi:.2}"));
        }
        d
    })
    .await;
    println!(
        "targets: commission earned and projected from an imported plan match the plan's terms"
    );
}

/// Every record of a topic as (key, JSON value), in order.
fn read_json(topic: &str) -> Vec<(String, serde_json::Value)> {
    read_topic(topic)
        .into_iter()
        .map(|r| {
            let key = String::from_utf8(r.key.unwrap_or_default()).expect("utf-8 key");
            let value = r
                .value
                .map(|v| serde_json::from_slice(&v).expect("JSON value"))
                .unwrap_or_default();
            (key, value)
        })
        .collect()
}

async fn wait_for(topic: &str, done: impl Fn(&[(String, serde_json::Value)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if done(&read_json(topic)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: expected record did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn converge(svc: &Service, diffs: impl Fn(&BTreeMap<String, f64>) -> Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let m = parse_metrics(&svc.metrics().await);
        let d = diffs(&m);
        if d.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "targets differ from the reference:\n{}",
            d.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
