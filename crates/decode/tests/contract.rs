//! Input contract v1: every rejection reason, and JSON and protobuf meaning the same thing.

use chrono::NaiveDate;
use proptest::prelude::*;
use prost::Message;
use rust_decimal::Decimal;
use salespulse_decode::{pb, Contract, ForecastCategory, Format, Reason, RosterEvent};
use serde_json::json;

const NOW_MS: i64 = 1_795_780_800_000; // 2026-11-27T12:00:00Z

fn deal() -> serde_json::Value {
    json!({
        "event_id": "e1", "deal_id": "d1", "rep_id": "r1", "stage": "proposal",
        "amount": "1234.50", "currency": "EUR",
        "created_at": "2026-11-20T10:00:00Z", "occurred_at": "2026-11-27T11:00:00.250Z",
        "expected_close_date": "2026-12-15"
    })
}

fn reject(v: serde_json::Value) -> Reason {
    let bytes = serde_json::to_vec(&v).expect("json");
    Contract::default()
        .decode_deal(Some(b"d1"), &bytes, Format::Json, NOW_MS)
        .expect_err("rejected")
        .reason
}

fn with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut d = deal();
    d[field] = value;
    d
}

fn without(field: &str) -> serde_json::Value {
    let mut d = deal();
    d.as_object_mut().expect("object").remove(field);
    d
}

#[test]
fn a_valid_deal_is_converted_to_the_reporting_currency_exactly() {
    let bytes = serde_json::to_vec(&deal()).expect("json");
    let ev = Contract::default()
        .decode_deal(Some(b"d1"), &bytes, Format::Json, NOW_MS)
        .expect("valid");
    // 1234.50 EUR x 1.08 = 1333.26 USD exactly.
    assert_eq!(ev.amount, "1333.26".parse::<Decimal>().expect("decimal"));
    assert_eq!(ev.occurred_at, 1_795_777_200_250);
    assert_eq!(ev.closed_at, None);
    assert_eq!(
        ev.expected_close_date.map(|d| d.to_string()).as_deref(),
        Some("2026-12-15")
    );
}

#[test]
fn json_numbers_are_read_as_the_decimal_they_spell() {
    let bytes = serde_json::to_vec(&with("amount", json!(0.1))).expect("json");
    let mut d: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    d["currency"] = json!("USD");
    let bytes = serde_json::to_vec(&d).expect("json");
    let ev = Contract::default()
        .decode_deal(None, &bytes, Format::Json, NOW_MS)
        .expect("valid");
    assert_eq!(ev.amount, Decimal::new(10, 2));
    assert_ne!(ev.amount, Decimal::new(1_000_000_000_000_000_055, 19));
}

#[test]
fn every_contract_violation_has_its_reason() {
    assert_eq!(
        Contract::default()
            .decode_deal(None, b"{\"event_id\":", Format::Json, NOW_MS)
            .expect_err("bad")
            .reason,
        Reason::InvalidJson
    );
    assert_eq!(
        Contract::default()
            .decode_deal(None, b"\xff\xfe", Format::Json, NOW_MS)
            .expect_err("bad")
            .reason,
        Reason::InvalidJson
    );
    assert_eq!(reject(without("rep_id")), Reason::MissingField);
    assert_eq!(reject(with("rep_id", json!(42))), Reason::WrongType);
    assert_eq!(reject(with("amount", json!(true))), Reason::WrongType);
    assert_eq!(reject(with("rep_id", json!(""))), Reason::EmptyId);
    assert_eq!(
        reject(with("rep_id", json!("x".repeat(200)))),
        Reason::IdTooLong
    );
    assert_eq!(
        reject(with("amount", json!("12,50"))),
        Reason::InvalidAmount
    );
    assert_eq!(reject(with("amount", json!("NaN"))), Reason::InvalidAmount);
    assert_eq!(reject(with("amount", json!("-1"))), Reason::NegativeAmount);
    assert_eq!(
        reject(with("amount", json!(1e300))),
        Reason::AmountOutOfRange
    );
    assert_eq!(
        reject(with("amount", json!("99999999999999999999999999999999"))),
        Reason::AmountOutOfRange
    );
    assert_eq!(
        reject(with("amount", json!("1e13"))),
        Reason::AmountOutOfRange
    );
    assert_eq!(
        reject(with("currency", json!("XYZ"))),
        Reason::UnknownCurrency
    );
    assert_eq!(reject(with("stage", json!("won"))), Reason::UnknownStage);
    assert_eq!(
        reject(with("occurred_at", json!("yesterday"))),
        Reason::InvalidTimestamp
    );
    assert_eq!(
        reject(with("occurred_at", json!("1900-01-01T00:00:00Z"))),
        Reason::InvalidTimestamp
    );
    assert_eq!(
        reject(with("occurred_at", json!("2026-11-27T12:06:00Z"))),
        Reason::FutureTimestamp
    );
    let mut d = with("stage", json!("closed_won"));
    d["closed_at"] = json!("2026-11-01T00:00:00Z");
    assert_eq!(reject(d), Reason::ClosedBeforeCreated);
    let bytes = serde_json::to_vec(&deal()).expect("json");
    let c = Contract::default();
    assert_eq!(
        c.decode_deal(Some(b"other"), &bytes, Format::Json, NOW_MS)
            .expect_err("bad")
            .reason,
        Reason::KeyMismatch
    );
    assert_eq!(
        c.decode_deal(None, &vec![b' '; 70_000], Format::Json, NOW_MS)
            .expect_err("bad")
            .reason,
        Reason::PayloadTooLarge
    );
    assert_eq!(
        c.decode_deal(None, b"", Format::Json, NOW_MS)
            .expect_err("bad")
            .reason,
        Reason::EmptyPayload
    );
    assert_eq!(
        c.decode_deal(None, b"\x0a\xff", Format::Protobuf, NOW_MS)
            .expect_err("bad")
            .reason,
        Reason::InvalidProtobuf
    );
    assert_eq!(
        Format::from_content_type(Some(b"text/csv"))
            .expect_err("bad")
            .reason,
        Reason::UnsupportedContentType
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        c.decode_deal(None, deep.as_bytes(), Format::Json, NOW_MS)
            .expect_err("bad")
            .reason,
        Reason::WrongType
    );
}

#[test]
fn a_json_record_that_is_not_utf8_is_invalid_json_and_says_where() {
    let bytes = serde_json::to_vec(&with("rep_id", json!("r\u{e9}1"))).expect("json");
    let ev = Contract::default()
        .decode_deal(Some(b"d1"), &bytes, Format::Json, NOW_MS)
        .expect("valid");
    assert_eq!(ev.rep_id, "r\u{e9}1");
    // The accented letter's first byte alone, followed by a digit: not UTF-8.
    let at = bytes
        .windows(2)
        .position(|w| w == "\u{e9}".as_bytes())
        .expect("the accented letter");
    let mut cut = bytes.clone();
    cut.remove(at + 1);
    let e = Contract::default()
        .decode_deal(Some(b"d1"), &cut, Format::Json, NOW_MS)
        .expect_err("not UTF-8");
    assert_eq!(e.reason, Reason::InvalidJson);
    assert!(e.detail.contains("not UTF-8"), "{}", e.detail);
    assert!(e.detail.contains(&format!("index {at}")), "{}", e.detail);

    let mut activity =
        br#"{"event_id":"a1","rep_id":"r?","kind":"call","occurred_at":"2026-11-27T11:00:00Z"}"#
            .to_vec();
    let at = activity.iter().position(|b| *b == b'?').expect("marker");
    activity[at] = 0xff;
    let e = Contract::default()
        .decode_activity(None, &activity, Format::Json, NOW_MS)
        .expect_err("not UTF-8");
    assert_eq!(e.reason, Reason::InvalidJson);
}

#[test]
fn forecast_category_comes_from_the_record_or_else_from_the_stage() {
    let c = Contract::default();
    let decode = |v: serde_json::Value| {
        let bytes = serde_json::to_vec(&v).expect("json");
        c.decode_deal(Some(b"d1"), &bytes, Format::Json, NOW_MS)
            .expect("valid")
            .forecast_category
    };
    assert_eq!(decode(deal()), ForecastCategory::BestCase);
    assert_eq!(
        decode(with("stage", json!("negotiation"))),
        ForecastCategory::Commit
    );
    assert_eq!(
        decode(with("forecast_category", json!("commit"))),
        ForecastCategory::Commit
    );
    assert_eq!(
        reject(with("forecast_category", json!("maybe"))),
        Reason::UnknownForecastCategory
    );
    assert_eq!(
        reject(with("forecast_category", json!(3))),
        Reason::WrongType
    );
    let p = pb::Deal {
        event_id: "e1".into(),
        deal_id: "d1".into(),
        rep_id: "r1".into(),
        team_id: None,
        stage: "proposal".into(),
        amount: "10".into(),
        currency: "USD".into(),
        created_at: Some(ts(NOW_MS - 1_000)),
        occurred_at: Some(ts(NOW_MS - 1_000)),
        closed_at: None,
        expected_close_date: None,
        forecast_category: Some("maybe".into()),
    }
    .encode_to_vec();
    let err = c
        .decode_deal(Some(b"d1"), &p, Format::Protobuf, NOW_MS)
        .expect_err("rejected");
    assert_eq!(err.reason, Reason::UnknownForecastCategory);
    assert!(err.to_string().contains("maybe"), "{err}");
}

#[test]
fn activities_and_roster() {
    let c = Contract::default();
    let a =
        json!({"event_id":"a1","rep_id":"r1","kind":"call","occurred_at":"2026-11-27T11:59:00Z"});
    let bytes = serde_json::to_vec(&a).expect("json");
    let ev = c
        .decode_activity(Some(b"r1"), &bytes, Format::Json, NOW_MS)
        .expect("valid");
    assert_eq!(ev.kind, 0);
    let bad =
        json!({"event_id":"a1","rep_id":"r1","kind":"lunch","occurred_at":"2026-11-27T11:59:00Z"});
    assert_eq!(
        c.decode_activity(
            None,
            &serde_json::to_vec(&bad).expect("json"),
            Format::Json,
            NOW_MS
        )
        .expect_err("bad")
        .reason,
        Reason::UnknownKind
    );
    assert_eq!(
        c.decode_roster(Some(b"r1"), None, Format::Json)
            .expect("tombstone"),
        RosterEvent::Remove {
            rep_id: "r1".into()
        }
    );
    let off = json!({"rep_id":"r1","team_id":"t","active":false});
    assert_eq!(
        c.decode_roster(
            Some(b"r1"),
            Some(&serde_json::to_vec(&off).expect("json")),
            Format::Json
        )
        .expect("valid"),
        RosterEvent::Remove {
            rep_id: "r1".into()
        }
    );
    assert_eq!(
        c.decode_roster(None, None, Format::Json)
            .expect_err("no key")
            .reason,
        Reason::EmptyId
    );
}

#[test]
fn roster_entries_carry_name_region_and_hiring_date_in_both_encodings() {
    let c = Contract::default();
    let want = RosterEvent::Upsert {
        rep_id: "r1".into(),
        team_id: "t".into(),
        name: Some("Ada Lovelace".into()),
        region: Some("europe".into()),
        hired_at: NaiveDate::from_ymd_opt(2026, 3, 1),
    };
    let j = json!({"rep_id":"r1","team_id":"t","name":"Ada Lovelace","region":"europe","hired_at":"2026-03-01"});
    let bytes = serde_json::to_vec(&j).expect("json");
    assert_eq!(
        c.decode_roster(Some(b"r1"), Some(&bytes), Format::Json)
            .expect("valid"),
        want
    );
    let p = pb::RosterEntry {
        rep_id: "r1".into(),
        team_id: "t".into(),
        name: Some("Ada Lovelace".into()),
        active: None,
        region: Some("europe".into()),
        hired_at: Some("2026-03-01".into()),
    }
    .encode_to_vec();
    assert_eq!(
        c.decode_roster(Some(b"r1"), Some(&p), Format::Protobuf)
            .expect("valid"),
        want
    );
    let bad = |field: &str, v: serde_json::Value| {
        let mut j = j.clone();
        j[field] = v;
        let bytes = serde_json::to_vec(&j).expect("json");
        c.decode_roster(Some(b"r1"), Some(&bytes), Format::Json)
            .expect_err("rejected")
            .reason
    };
    assert_eq!(
        bad("hired_at", json!("March 2026")),
        Reason::InvalidTimestamp
    );
    assert_eq!(bad("region", json!("")), Reason::EmptyId);
    assert_eq!(bad("name", json!("x".repeat(300))), Reason::IdTooLong);
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn rfc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

proptest! {
    /// The same deal in JSON and in protobuf decodes to the same event.
    #[test]
    fn json_and_protobuf_agree(
        cents in 0i64..10_000_000_000,
        stage in 0usize..6,
        created in 1_700_000_000_000i64..NOW_MS,
        dt in 0i64..10_000_000,
        eur in any::<bool>(),
        team in prop::option::of("[a-z]{1,8}"),
        rep in "[a-zA-Z0-9_\\-\"\\\\/ ]{1,20}",
        category in prop::option::of(prop::sample::select(vec!["pipeline", "best_case", "commit", "omitted", "closed"])),
    ) {
        let stages = ["prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost"];
        let amount = Decimal::new(cents, 2).to_string();
        let occurred = (created + dt).min(NOW_MS);
        let closed = (stage >= 4).then_some(occurred);
        let currency = if eur { "EUR" } else { "USD" };
        let mut j = json!({
            "event_id": "e", "deal_id": "d", "rep_id": rep, "stage": stages[stage],
            "amount": amount, "currency": currency,
            "created_at": rfc(created), "occurred_at": rfc(occurred),
        });
        if let Some(t) = &team { j["team_id"] = json!(t); }
        if let Some(c) = closed { j["closed_at"] = json!(rfc(c)); }
        if let Some(c) = category { j["forecast_category"] = json!(c); }
        let p = pb::Deal {
            event_id: "e".into(), deal_id: "d".into(), rep_id: rep.clone(), team_id: team.clone(),
            stage: stages[stage].into(), amount: amount.clone(), currency: currency.into(),
            created_at: Some(ts(created)), occurred_at: Some(ts(occurred)), closed_at: closed.map(ts),
            expected_close_date: None, forecast_category: category.map(str::to_owned),
        }.encode_to_vec();
        let c = Contract::default();
        let json_bytes = serde_json::to_vec(&j).expect("json");
        let a = c.decode_deal(Some(b"d"), &json_bytes, Format::Json, NOW_MS).expect("json valid");
        let b = c.decode_deal(Some(b"d"), &p, Format::Protobuf, NOW_MS).expect("protobuf valid");
        prop_assert_eq!(a, b);
    }

    /// No input makes a decoder panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let c = Contract::default();
        for f in [Format::Json, Format::Protobuf] {
            let _ = c.decode_deal(None, &bytes, f, NOW_MS);
            let _ = c.decode_activity(None, &bytes, f, NOW_MS);
            let _ = c.decode_roster(None, Some(&bytes), f);
        }
    }
}
