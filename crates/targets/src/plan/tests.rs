use proptest::prelude::*;

use super::*;

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn rules() -> TargetRules {
    TargetRules {
        kinds: Default::default(),
        reporting_currency: "USD".into(),
        rates: [
            ("USD".to_owned(), Decimal::ONE),
            ("EUR".to_owned(), d("1.08")),
        ]
        .into_iter()
        .collect(),
    }
}

/// The plan of docs/targets.md's worked example: OTV 20,000 a quarter; 0–50 % at 0.6,
/// 50–100 % at 1.4, above 100 % at 2; half pay below 25 %; at most 2.5 × OTV.
fn example() -> Plan {
    Plan {
        name: "ae".into(),
        rep: "rep-a".into(),
        otv: d("20000"),
        metric: TargetMetric::Bookings,
        period_type: PeriodType::Quarter,
        tiers: vec![
            Tier {
                from: d("0"),
                to: Some(d("50")),
                rate: d("0.6"),
            },
            Tier {
                from: d("50"),
                to: Some(d("100")),
                rate: d("1.4"),
            },
            Tier {
                from: d("100"),
                to: None,
                rate: d("2"),
            },
        ],
        decelerator: Some(Decelerator {
            below: d("25"),
            factor: d("0.5"),
        }),
        cap: Some(d("2.5")),
    }
}

#[test]
fn payout_by_hand() {
    let p = example();
    for (attainment, want) in [
        // 30 x 0.6 = 18 % of OTV.
        ("0.3", "3600"),
        // 20 x 0.6 = 12 %, halved below 25 %.
        ("0.2", "1200"),
        // Exactly at the decelerator's threshold: full pay, 25 x 0.6 = 15 %.
        ("0.25", "3000"),
        // 50 x 0.6 + 30 x 1.4 = 72 %.
        ("0.8", "14400"),
        // 50 x 0.6 + 50 x 1.4 = 100 %: OTV at quota.
        ("1", "20000"),
        // 100 % + 25 x 2 = 150 %.
        ("1.25", "30000"),
        // 100 % + 100 x 2 = 300 %, capped at 250 %.
        ("2", "50000"),
        ("0", "0"),
        // A negative actual (corrections) pays nothing.
        ("-0.1", "0"),
    ] {
        assert_eq!(p.payout(d(attainment)), Some(d(want)), "at {attainment}");
    }
    // 12.3456 x 0.6 = 7.40736 % of 20,000 = 1481.472, halved = 740.736: 740.74 in cents only.
    assert_eq!(p.payout(d("0.123456")), Some(d("740.736")));
    assert_eq!(p.payout_cents(d("0.123456")), Some(d("740.74")));
    // Beyond a bounded last tier nothing more is paid (100 % + 50 x 2 = 200 %); without a cap,
    // an accelerator goes on.
    let mut bounded = example();
    bounded.tiers[2].to = Some(d("150"));
    bounded.cap = None;
    assert_eq!(bounded.payout(d("3")), Some(d("40000")));
    let mut uncapped = example();
    uncapped.cap = None;
    // 100 % + 200 x 2 = 500 % of OTV.
    assert_eq!(uncapped.payout(d("3")), Some(d("100000")));
    // An absurd attainment overflows only an uncapped plan.
    assert_eq!(uncapped.payout(Decimal::MAX), None);
}

#[test]
fn the_worked_example_of_the_docs() {
    // docs/targets.md: rep-001's quarter target 120,000, 60 % of the quarter elapsed.
    let p = example();
    let quota = d("120000");
    let pays = |actual: &str| p.payout_cents(d(actual) / quota).expect("in range");
    assert_eq!(pays("54000"), d("5400.00"));
    assert_eq!(pays("90000"), d("13000.00"));
    assert_eq!(
        p.payout_cents(d("54000") / (quota * d("0.6"))),
        Some(d("13000.00"))
    );
    assert_eq!(pays("24000"), d("1200.00"));
    assert_eq!(pays("30000"), d("3000.00"));
    assert_eq!(pays("120000"), d("20000.00"));
    assert_eq!(pays("180000"), d("40000.00"));
    assert_eq!(pays("276000"), d("50000.00"));
    // 40,000 / 120,000 is not a finite decimal: 3999.99.. before the rounding to the cent.
    assert!(p.payout(d("40000") / quota).expect("in range") < d("4000"));
    assert_eq!(pays("40000"), d("4000.00"));
}

fn row(line: u64, fields: [&str; 12]) -> PlanRow {
    let f = |i: usize| fields[i].to_owned();
    PlanRow {
        line,
        plan: f(0),
        reps: f(1),
        otv: f(2),
        currency: f(3),
        metric: f(4),
        period_type: f(5),
        tier_from: f(6),
        tier_to: f(7),
        rate: f(8),
        decelerator_below: f(9),
        decelerator_factor: f(10),
        cap: f(11),
    }
}

/// The example file of docs/targets.md, its rows on lines 2 to 7.
fn example_rows() -> Vec<PlanRow> {
    vec![
        row(
            2,
            [
                "ae",
                "rep-a;rep-b",
                "20000",
                "USD",
                "bookings",
                "quarter",
                "0",
                "50",
                "0.6",
                "25",
                "0.5",
                "2.5",
            ],
        ),
        row(
            3,
            ["ae", "", "", "", "", "", "50", "100", "1.4", "", "", ""],
        ),
        row(
            4,
            ["ae", "rep-c", "", "", "", "", "100", "", "2", "", "", ""],
        ),
        row(
            5,
            [
                "sdr",
                "rep-d",
                "5000",
                "EUR",
                "deals_won",
                "month",
                "0",
                "100",
                "1",
                "",
                "",
                "",
            ],
        ),
        row(
            6,
            [
                "sdr",
                "rep-d",
                "5000",
                "EUR",
                "deals_won",
                "month",
                "100",
                "",
                "1.5",
                "",
                "",
                "",
            ],
        ),
    ]
}

#[test]
fn csv_rows_make_one_plan_per_rep() {
    let plans = plans_from_rows(&example_rows(), &rules()).expect("valid");
    let keys: Vec<String> = plans.iter().map(|(p, _)| p.key()).collect();
    assert_eq!(
        keys,
        [
            "rep-a/quarter",
            "rep-b/quarter",
            "rep-c/quarter",
            "rep-d/month"
        ]
    );
    let (a, record) = &plans[0];
    assert_eq!(a, &example());
    // The record on the topic reads back as the same plan.
    let json = serde_json::to_vec(record).expect("json");
    assert_eq!(PlanRecord::parse(&json, &rules()).as_ref(), Ok(a));
    let (sdr, _) = &plans[3];
    // 5,000 EUR at 1.08.
    assert_eq!(sdr.otv, d("5400"));
    assert_eq!(sdr.metric, TargetMetric::DealsWon);
    assert_eq!(sdr.period_type, PeriodType::Month);
    assert_eq!((sdr.decelerator, sdr.cap), (None, None));
}

/// The errors of a file, as their display strings.
fn errors(rows: &[PlanRow]) -> Vec<String> {
    plans_from_rows(rows, &rules())
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn bad_rows_are_named_by_line_and_reason() {
    let mut rows = example_rows();
    // A gap: 50–100 becomes 60–100.
    rows[1].tier_from = "60".into();
    // The second sdr row names another OTV.
    rows[4].otv = "6000".into();
    assert_eq!(
        errors(&rows),
        [
            "line 3: invalid_tiers: the tier from 60 % leaves a gap after 50 %",
            "line 6: conflicting_value: plan \"sdr\": otv \"6000\" differs from \"5000\" on line 5",
        ]
    );
    let bad = |i: usize, change: &dyn Fn(&mut PlanRow)| {
        let mut rows = example_rows();
        change(&mut rows[i]);
        errors(&rows)
    };
    assert_eq!(
        bad(2, &|r| r.tier_from = "90".into()),
        ["line 4: invalid_tiers: the tier from 90 % overlaps the tier before, which ends at 100 %"]
    );
    assert_eq!(
        bad(1, &|r| r.tier_to = String::new()),
        ["line 4: invalid_tiers: the tier from 100 % follows an open-ended tier (only the last may have no tier_to)"]
    );
    assert_eq!(
        bad(0, &|r| r.tier_from = "10".into()),
        ["line 2: invalid_tiers: the tier from 10 % leaves a gap after 0 %"]
    );
    assert_eq!(
        bad(1, &|r| r.tier_to = "40".into()),
        ["line 3: invalid_tiers: tier_to 40 is not above tier_from 50"]
    );
    assert_eq!(
        bad(1, &|r| r.rate = "-1".into()),
        ["line 3: negative_amount: rate -1 is negative"]
    );
    assert_eq!(
        bad(1, &|r| r.rate = "1,4".into()),
        ["line 3: invalid_amount: rate \"1,4\" is not a decimal"]
    );
    assert_eq!(
        bad(0, &|r| r.otv = String::new()),
        ["line 2: missing_field: plan \"ae\": no otv on any of its rows"]
    );
    assert_eq!(
        bad(0, &|r| r.metric = "activities".into()),
        ["line 2: unknown_metric: quota metric \"activities\" is not bookings, deals_won or pipeline_created"]
    );
    assert_eq!(
        bad(0, &|r| r.period_type = "week".into()),
        ["line 2: invalid_period_type: period_type \"week\" is not quarter, month or year"]
    );
    assert_eq!(
        bad(0, &|r| r.currency = "XYZ".into()),
        ["line 2: unknown_currency: currency \"XYZ\" has no configured rate"]
    );
    assert_eq!(
        bad(0, &|r| r.decelerator_factor = String::new()),
        ["line 2: invalid_decelerator: plan \"ae\": a decelerator needs both decelerator_below and decelerator_factor"]
    );
    assert_eq!(
        bad(0, &|r| r.decelerator_factor = "1.5".into()),
        ["line 2: invalid_decelerator: decelerator_factor 1.5 is above 1 (a decelerator only reduces)"]
    );
    assert_eq!(
        bad(0, &|r| r.cap = "0".into()),
        ["line 2: invalid_cap: cap 0 pays nothing; leave it empty for no cap"]
    );
    assert_eq!(
        bad(0, &|r| r.plan = " ".into()),
        [
            "line 2: empty_plan: the row names no plan",
            // The plan's other rows are left without the first, which held its columns.
            "line 3: missing_field: plan \"ae\": no otv on any of its rows",
        ]
    );
    // rep-d is on the sdr plan, monthly; a second monthly plan for it is refused.
    let mut rows = example_rows();
    rows.push(row(
        7,
        [
            "bonus", "rep-d", "100", "", "", "month", "0", "", "1", "", "", "",
        ],
    ));
    assert_eq!(
        errors(&rows),
        ["line 7: duplicate_plan: rep \"rep-d\" is on plan \"sdr\" (line 5) and plan \"bonus\", both for period type month"]
    );
    // The same rep on a yearly plan is fine.
    rows[5].period_type = "year".into();
    assert_eq!(plans_from_rows(&rows, &rules()).map(|p| p.len()), Ok(5));
    // A plan without a rep on any of its rows.
    let mut rows = example_rows();
    rows[0].reps.clear();
    rows[2].reps.clear();
    assert_eq!(
        errors(&rows),
        ["line 2: missing_field: plan \"ae\": no rep in its reps column"]
    );
}

#[test]
fn records_on_the_topic_are_checked_like_rows() {
    let r = rules();
    let reason = |json: &str| {
        PlanRecord::parse(json.as_bytes(), &r)
            .expect_err("bad")
            .reason
    };
    assert_eq!(reason("{\"plan\":"), "invalid_json");
    // Unknown fields are an error, not ignored.
    assert_eq!(
        reason(
            r#"{"plan":"p","rep":"a","otv":"1","period_type":"quarter","tiers":[{"from":"0","rate":"1"}],"bonus":"1"}"#
        ),
        "invalid_json"
    );
    assert_eq!(
        reason(r#"{"plan":"p","rep":"a","otv":"1","period_type":"quarter","tiers":[]}"#),
        "invalid_tiers"
    );
    assert_eq!(
        reason(
            r#"{"plan":"p","rep":"","otv":"1","period_type":"quarter","tiers":[{"from":"0","rate":"1"}]}"#
        ),
        "empty_id"
    );
    // The smallest plan: OTV paid in proportion to attainment, bookings by default.
    let p = PlanRecord::parse(
        br#"{"plan":"p","rep":"a","otv":"1000","period_type":"year","tiers":[{"from":"0","rate":"1"}]}"#,
        &r,
    )
    .expect("valid");
    assert_eq!(
        (p.metric, p.key()),
        (TargetMetric::Bookings, "a/year".into())
    );
    assert_eq!(p.payout(d("0.42")), Some(d("420")));
}

/// Payout by a different method than [`Plan::payout`]: the marginal rate at each point of
/// attainment is that of the tier containing it (0 past a bounded last tier); integrate it
/// from 0 to the attainment over the pieces between consecutive breakpoints, each piece at
/// the rate of its midpoint.
fn reference(plan: &Plan, attainment: Decimal) -> Decimal {
    let a = (attainment * Decimal::ONE_HUNDRED).max(Decimal::ZERO);
    let rate_at = |x: Decimal| {
        plan.tiers
            .iter()
            .find(|t| t.from <= x && t.to.is_none_or(|to| x < to))
            .map_or(Decimal::ZERO, |t| t.rate)
    };
    let mut points: Vec<Decimal> = plan
        .tiers
        .iter()
        .flat_map(|t| [Some(t.from), t.to])
        .flatten()
        .filter(|x| *x < a)
        .chain([Decimal::ZERO, a])
        .collect();
    points.sort();
    points.dedup();
    let area: Decimal = points
        .windows(2)
        .map(|w| rate_at((w[0] + w[1]) / Decimal::TWO) * (w[1] - w[0]))
        .sum();
    let full = area * plan.otv / Decimal::ONE_HUNDRED;
    let decelerated = match plan.decelerator {
        Some(d) if a < d.below => full * d.factor,
        _ => full,
    };
    match plan.cap {
        Some(cap) if decelerated > cap * plan.otv => cap * plan.otv,
        _ => decelerated,
    }
}

/// A decimal of `scale` places from an integer count of its smallest unit.
fn dec(units: i64, scale: u32) -> Decimal {
    Decimal::new(units, scale)
}

prop_compose! {
    /// Plans of 1 to 5 tiers (widths 0.01 to 200 %, rates 0 to 5), the last open-ended or
    /// not, with or without a decelerator and a cap.
    fn plans()(
        widths in prop::collection::vec(1i64..=20_000, 1..=5),
        rates in prop::collection::vec(0i64..=5_000, 5),
        open in any::<bool>(),
        otv in 0i64..=100_000_000,
        decelerator in prop::option::of((0i64..=15_000, 0i64..=100)),
        cap in prop::option::of(1i64..=500),
    ) -> Plan {
        let mut from = Decimal::ZERO;
        let mut tiers = Vec::new();
        for (i, w) in widths.iter().enumerate() {
            let to = from + dec(*w, 2);
            let last = i + 1 == widths.len();
            tiers.push(Tier {
                from,
                to: (!(last && open)).then_some(to),
                rate: dec(rates[i], 3),
            });
            from = to;
        }
        Plan {
            name: "p".into(),
            rep: "r".into(),
            otv: dec(otv, 2),
            metric: TargetMetric::Bookings,
            period_type: PeriodType::Quarter,
            tiers,
            decelerator: decelerator.map(|(b, f)| Decelerator { below: dec(b, 2), factor: dec(f, 2) }),
            cap: cap.map(|c| dec(c, 2)),
        }
    }
}

proptest! {
    #[test]
    fn payout_matches_the_piecewise_integral(
        plan in plans(),
        attainment in -100_000i64..=4_000_000,
        step in 0i64..=1_000_000,
    ) {
        let a = dec(attainment, 6);
        let pay = plan.payout(a).expect("in range");
        prop_assert_eq!(pay, reference(&plan, a));
        prop_assert_eq!(
            plan.payout_cents(a),
            Some(reference(&plan, a).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
        );
        // Rates ≥ 0 and a factor ≤ 1: more attainment never pays less, nor above the cap.
        let more = plan.payout(a + dec(step, 6)).expect("in range");
        prop_assert!(more >= pay, "{} at {} < {} at {}", more, a + dec(step, 6), pay, a);
        if let Some(cap) = plan.cap {
            prop_assert!(more <= cap * plan.otv);
        }
    }
}
