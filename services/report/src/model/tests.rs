use super::*;

fn rec(scope: &str, id: &str, team: &str, metric: &str, window: &str, value: &str) -> MetricRecord {
    MetricRecord {
        scope: scope.into(),
        id: id.into(),
        team: team.into(),
        metric: metric.into(),
        labels: BTreeMap::new(),
        window: window.into(),
        value: value.parse().expect("decimal"),
        as_of: "2026-12-02T10:00:00.000Z".into(),
        name: String::new(),
    }
}

fn with(mut r: MetricRecord, labels: &[(&str, &str)]) -> MetricRecord {
    for (k, v) in labels {
        r.labels.insert((*k).into(), (*v).into());
    }
    r
}

fn info(rep: &str, team: &str, name: &str, hired: Option<&str>) -> MetricRecord {
    let mut labels = vec![("name", name), ("region", "")];
    if let Some(h) = hired {
        labels.push(("hired_at", h));
    }
    with(rec("rep", rep, team, "info", "", "1"), &labels)
}

fn target(scope: Scope, id: &str, period: &str, value: &str) -> Target {
    Target {
        scope,
        id: id.into(),
        metric: TargetMetric::Bookings,
        kind: None,
        period: Period::parse(period).expect("period"),
        value: value.parse().expect("decimal"),
    }
}

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

/// 2026-12-02 10:00 UTC: Q4 is current, Q3 the last quarter.
const NOW: i64 = 1_796_205_600;

fn settings<'a>(
    period: &str,
    team: Option<&'a str>,
    cal: &'a Calendar,
    ramp: &'a Ramp,
) -> Settings<'a> {
    Settings {
        period: Period::parse(period).expect("period"),
        team,
        now: NOW,
        calendar: cal,
        ramp,
        currency: "USD",
    }
}

/// Two teams; rep a books under two teams (its deals named the old one); rep c is in ramp.
fn records(window: &str) -> Vec<MetricRecord> {
    let mut v = vec![
        info("a", "x", "Ada", Some("2024-01-01")),
        info("b", "x", "Bo", None),
        info("c", "y", "Cy", Some("2026-08-01")),
        rec("rep", "a", "x", "bookings", window, "1000"),
        rec("rep", "a", "x", "deals_won", window, "2"),
        rec("rep", "a", "x", "deals_lost", window, "1"),
        rec("rep", "a", "x", "sales_cycle_seconds", window, "864000"), // 10 days
        rec("rep", "a", "y", "bookings", window, "500"),
        rec("rep", "a", "y", "deals_won", window, "2"),
        rec("rep", "a", "y", "sales_cycle_seconds", window, "432000"), // 5 days
        rec("rep", "a", "x", "pipeline_created", window, "3000"),
        with(
            rec("rep", "a", "x", "activities", window, "7"),
            &[("kind", "call")],
        ),
        with(
            rec("rep", "a", "x", "activities", window, "3"),
            &[("kind", "email")],
        ),
        rec("rep", "b", "x", "bookings", window, "1500"),
        rec("rep", "b", "x", "deals_won", window, "1"),
        rec("rep", "b", "x", "deals_lost", window, "0"),
        rec("rep", "c", "y", "bookings", window, "200"),
        rec("rep", "c", "y", "deals_won", window, "1"),
        rec("team", "x", "x", "bookings", window, "2500"),
        rec("team", "x", "x", "deals_won", window, "3"),
        rec("team", "x", "x", "deals_lost", window, "1"),
        rec("team", "y", "y", "bookings", window, "700"),
        rec("team", "y", "y", "deals_won", window, "3"),
        rec("org", "org", "", "bookings", window, "3200"),
        rec("org", "org", "", "deals_won", window, "6"),
        rec("org", "org", "", "deals_lost", window, "1"),
        with(
            rec("rep", "a", "x", "consistency_cv", "", "0.5"),
            &[("metric", "bookings")],
        ),
        with(
            rec("rep", "b", "x", "consistency_cv", "", "1.5"),
            &[("metric", "bookings")],
        ),
        with(
            rec("rep", "a", "x", "consistency_cv", "", "9"),
            &[("metric", "activities")],
        ),
        with(
            rec("team", "x", "x", "weekly_bookings", "", "400"),
            &[("week", "2026-06-29")],
        ),
        with(
            rec("team", "x", "x", "weekly_bookings", "", "600"),
            &[("week", "2026-09-28")],
        ),
        with(
            rec("team", "x", "x", "weekly_bookings", "", "50"),
            &[("week", "2026-10-05")],
        ),
        // The other window must not leak in.
        rec("rep", "b", "x", "bookings", "ytd", "99999"),
    ];
    v.push(rec("team", "y", "y", "deals_lost", window, "0"));
    v
}

fn targets() -> Vec<Target> {
    vec![
        target(Scope::Rep, "a", "2026-Q3", "1000"),
        target(Scope::Rep, "b", "2026-Q3", "2000"),
        target(Scope::Rep, "c", "2026-Q3", "1000"),
        target(Scope::Rep, "a", "2026-Q4", "5000"),
        target(Scope::Team, "x", "2026-Q3", "2000"),
    ]
}

#[test]
fn last_quarter_comes_from_the_closed_window_and_older_ones_are_refused() {
    let cal = Calendar::utc();
    let ramp = Ramp::default();
    let r = build(
        &records("last_quarter"),
        &targets(),
        &settings("2026-Q3", None, &cal, &ramp),
    )
    .expect("report");
    assert_eq!(r.window, Window::LastQuarter);
    assert_eq!(
        (r.first.to_string(), r.last.to_string()),
        ("2026-07-01".into(), "2026-09-30".into())
    );
    let r = build(
        &records("qtd"),
        &targets(),
        &settings("2026-Q4", None, &cal, &ramp),
    )
    .expect("report");
    assert_eq!(r.window, Window::Qtd);
    assert_eq!(
        r.reps.iter().find(|x| x.id == "a").and_then(|x| x.target),
        Some(d("5000"))
    );
    let err = build(
        &records("qtd"),
        &targets(),
        &settings("2026-Q2", None, &cal, &ramp),
    );
    assert!(matches!(err, Err(ReportError::OutOfRange { .. })));
    let err = build(
        &records("qtd"),
        &targets(),
        &settings("2026-11", None, &cal, &ramp),
    );
    assert!(matches!(err, Err(ReportError::NotAQuarter(_))));
}

#[test]
fn reps_add_up_over_their_teams_and_compare_with_ramped_targets() {
    let cal = Calendar::utc();
    let ramp = Ramp::new(vec![d("25"), d("50"), d("75")]).expect("ramp");
    let r = build(
        &records("last_quarter"),
        &targets(),
        &settings("2026-Q3", None, &cal, &ramp),
    )
    .expect("report");
    let rep = |id: &str| r.reps.iter().find(|x| x.id == id).expect("rep").clone();
    let a = rep("a");
    assert_eq!((a.name.as_str(), a.team.as_str()), ("Ada", "x"));
    assert_eq!((a.bookings, a.won, a.lost), (d("1500"), d("4"), d("1")));
    assert_eq!(a.win_rate, Some(d("0.8")));
    assert_eq!(a.avg_deal, Some(d("375")));
    // (10 days × 2 + 5 days × 2) / 4 won
    assert_eq!(a.cycle_days, Some(d("7.5")));
    assert_eq!(a.activities, d("10"));
    assert_eq!(a.attainment, Some(d("1.5")));
    assert_eq!(a.cv, Some(d("0.5")));
    // Hired 2026-08-01: 0 in July (31 days), 25 % in August (31), 50 % in September (30).
    let c = rep("c");
    let share = (d("31") * d("0.25") + d("30") * d("0.5")) / d("92");
    assert_eq!(c.ramp, Some(share));
    let target =
        (d("1000") * share).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(c.target, Some(target));
    assert_eq!(c.attainment, ratio(d("200"), target));
    // Ranks by bookings: b 1500 and a 1500 share first place, c third.
    assert_eq!(
        (rep("a").rank, rep("b").rank, rep("c").rank),
        (Some(1), Some(1), Some(3))
    );
    assert_eq!(rep("c").team_rank, Some(1));
    let x = r.teams.iter().find(|t| t.id == "x").expect("team");
    assert_eq!(x.attainment, Some(d("1.25")));
    assert_eq!((x.reps_with_target, x.reps_attaining), (2, 1));
    // a at 150 %, b at 75 %.
    assert_eq!(x.median_attainment, Some(d("1.125")));
    assert_eq!(x.cv, Some(d("1")));
    assert_eq!(r.teams[0].id, "x");
    let org = r.org.expect("org");
    assert_eq!(
        (org.bookings, org.win_rate),
        (d("3200"), ratio(d("6"), d("7")))
    );
    // a at 150 %; b at 75 %; c at 200 of its ramped 247.28 (81 %).
    assert_eq!(r.distribution, [0, 0, 2, 0, 1]);
}

#[test]
fn weekly_bookings_cover_the_weeks_that_touch_the_quarter() {
    let cal = Calendar::utc();
    let ramp = Ramp::default();
    let r = build(
        &records("last_quarter"),
        &targets(),
        &settings("2026-Q3", None, &cal, &ramp),
    )
    .expect("report");
    // Q3 2026 runs from Wednesday 1 July to Wednesday 30 September: 14 weeks from 29 June.
    assert_eq!(r.weeks.len(), 14);
    assert_eq!(r.weeks[0].to_string(), "2026-06-29");
    assert_eq!(r.weeks[13].to_string(), "2026-09-28");
    let x = r.weekly.iter().find(|t| t.team == "x").expect("team x");
    assert_eq!(x.bookings[0], d("400"));
    assert_eq!(x.bookings[13], d("600"));
    assert_eq!(x.bookings.iter().copied().sum::<Decimal>(), d("1000"));
}

#[test]
fn one_team_keeps_its_reps_only() {
    let cal = Calendar::utc();
    let ramp = Ramp::default();
    let r = build(
        &records("last_quarter"),
        &targets(),
        &settings("2026-Q3", Some("y"), &cal, &ramp),
    )
    .expect("report");
    assert_eq!(
        r.reps.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        vec!["c"]
    );
    assert_eq!(r.teams.len(), 1);
    assert!(r.org.is_none());
    let err = build(
        &records("last_quarter"),
        &targets(),
        &settings("2026-Q3", Some("z"), &cal, &ramp),
    );
    assert_eq!(err, Err(ReportError::UnknownTeam("z".into())));
}

#[test]
fn every_format_renders() {
    let cal = Calendar::utc();
    let ramp = Ramp::default();
    let r = build(
        &records("last_quarter"),
        &targets(),
        &settings("2026-Q3", None, &cal, &ramp),
    )
    .expect("report");
    let html = crate::render::html(&r).expect("html");
    assert_eq!(html.matches("<svg").count(), 3);
    assert!(html.contains("Ada"));
    let csv = crate::render::csv(&r).expect("csv");
    assert!(csv
        .lines()
        .any(|l| l.starts_with("rep,a,Ada,x,1500,1000,1.5,0.8,375,7.5,")));
    assert_eq!(
        csv.lines()
            .filter(|l| l.starts_with("team_week,x,"))
            .count(),
        14
    );
    let md = crate::render::markdown(&r);
    assert!(md.contains("| Ada | x | 1,500.00 | 1,000.00 | 150.0 % |"));
}
