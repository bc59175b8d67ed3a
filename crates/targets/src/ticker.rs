//! Today's celebrations for the sales floor's ticker, read from `sales.celebrations` itself,
//! so the board shows exactly what subscribers of the topic received.

use std::collections::HashMap;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use salespulse_aggregate::Calendar;
use serde_json::Value;

use crate::board::Out;

/// One celebration as the ticker shows it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Unix seconds: the deal's close for a big win, the decision for the others.
    at: i64,
    kind: String,
    rep: String,
    team: String,
    headline: String,
    /// The deal's amount (reporting currency) for a big win.
    amount: Option<Decimal>,
}

/// The celebrations of the current local day (configured zone), newest first on the board.
///
/// Every celebration of the day is kept (a day's are few next to the deals behind them) and
/// the newest `shown` of each kind are exposed, so a burst of milestones never hides the day's
/// big wins; older days are dropped as the day turns.
#[derive(Debug)]
pub struct Ticker {
    shown: usize,
    cal: Calendar,
    today: HashMap<String, Entry>,
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn seconds(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|d| d.timestamp())
}

fn decimal(v: Option<&Value>) -> Option<Decimal> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

/// What the ticker shows of a celebration record, if it is one it knows.
fn entry(v: &Value) -> Option<Entry> {
    let kind = text(v, &["celebration"]);
    let (at, rep, team, headline, amount) = match kind {
        "big_win" => (
            seconds(text(v, &["closed_at"]))?,
            text(v, &["rep"]),
            text(v, &["team"]),
            format!("Won deal {}", text(v, &["deal_id"])),
            decimal(v.get("amount")),
        ),
        "milestone" => {
            let rep = if text(v, &["subject", "scope"]) == "rep" {
                text(v, &["subject", "id"])
            } else {
                ""
            };
            let team = match text(v, &["subject", "scope"]) {
                "team" => text(v, &["subject", "id"]),
                _ => text(v, &["subject", "team"]),
            };
            let percent = v.get("milestone_percent").and_then(Value::as_u64)?;
            (
                seconds(text(v, &["at"]))?,
                rep,
                team,
                format!(
                    "{percent} % of the {} {} target",
                    text(v, &["period"]),
                    text(v, &["metric"]).replace('_', " ")
                ),
                None,
            )
        }
        "new_leader" => (
            seconds(text(v, &["at"]))?,
            text(v, &["rep"]),
            text(v, &["team"]),
            format!(
                "New number one of the team, {} bookings",
                text(v, &["period"])
            ),
            None,
        ),
        _ => return None,
    };
    Some(Entry {
        at,
        kind: kind.to_owned(),
        rep: rep.to_owned(),
        team: team.to_owned(),
        headline,
        amount,
    })
}

impl Ticker {
    pub fn new(shown: usize, cal: Calendar) -> Ticker {
        Ticker {
            shown,
            cal,
            today: HashMap::new(),
        }
    }

    /// Applies one record of `sales.celebrations` read at `now`: a celebration of an earlier
    /// day is not kept, a tombstone removes its key.
    pub fn apply(&mut self, key: &str, payload: Option<&[u8]>, now: i64) {
        let e = payload
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .and_then(|v| entry(&v));
        match e {
            Some(e) if self.is_today(e.at, now) => {
                self.today.insert(key.to_owned(), e);
            }
            _ => {
                self.today.remove(key);
            }
        }
    }

    fn is_today(&self, at: i64, now: i64) -> bool {
        self.cal.local_date(at) >= self.cal.local_date(now)
    }

    /// The newest `shown` celebrations of each kind of the day at `now`: their time
    /// (`sales_celebration_timestamp_seconds`) and, for big wins, the amount
    /// (`sales_celebration_amount`).
    pub fn series(&mut self, now: i64) -> Vec<Out> {
        let cal = self.cal;
        self.today
            .retain(|_, e| cal.local_date(e.at) >= cal.local_date(now));
        let mut newest: Vec<(&String, &Entry)> = self.today.iter().collect();
        newest.sort_by(|a, b| b.1.at.cmp(&a.1.at).then_with(|| a.0.cmp(b.0)));
        let mut out = Vec::new();
        let mut per_kind: HashMap<&str, usize> = HashMap::new();
        for (key, e) in newest {
            let n = per_kind.entry(e.kind.as_str()).or_default();
            if *n == self.shown {
                continue;
            }
            *n += 1;
            let labels = vec![
                ("celebration", e.kind.as_str().into()),
                ("id", key.as_str().into()),
                ("rep", e.rep.as_str().into()),
                ("team", e.team.as_str().into()),
                ("headline", e.headline.as_str().into()),
            ];
            if let Some(a) = e.amount.and_then(|a| a.to_f64()) {
                out.push(Out {
                    family: "sales_celebration_amount".into(),
                    labels: labels.clone(),
                    value: a,
                });
            }
            out.push(Out {
                family: "sales_celebration_timestamp_seconds".into(),
                labels,
                value: e.at as f64,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> i64 {
        seconds(s).expect("valid test time")
    }

    fn win(deal: &str, amount: &str, closed: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "celebration": "big_win", "deal_id": deal, "rep": "rep-1", "team": "emea",
            "amount": amount, "closed_at": closed,
        }))
        .expect("json")
    }

    fn shown(t: &mut Ticker, now: i64) -> Vec<(String, String, f64)> {
        t.series(now)
            .into_iter()
            .map(|o| {
                let id = o
                    .labels
                    .iter()
                    .find(|l| l.0 == "id")
                    .expect("id")
                    .1
                    .to_string();
                (o.family.to_string(), id, o.value)
            })
            .collect()
    }

    #[test]
    fn shows_the_newest_of_today_of_each_kind_with_big_win_amounts() {
        let mut t = Ticker::new(1, Calendar::utc());
        let now = ts("2026-12-02T15:00:00Z");
        t.apply(
            "big_win/old",
            Some(&win("old", "90000", "2026-12-01T23:59:59Z")),
            now,
        );
        t.apply(
            "big_win/a",
            Some(&win("a", "60000.50", "2026-12-02T09:00:00Z")),
            now,
        );
        t.apply(
            "big_win/b",
            Some(&win("b", "70000", "2026-12-02T10:00:00Z")),
            now,
        );
        let milestone = json!({
            "celebration": "milestone", "milestone_percent": 100,
            "subject": {"scope": "team", "id": "emea", "team": null},
            "metric": "deals_won", "period": "2026-Q4", "attainment": 1.02,
            "at": "2026-12-02T11:00:00Z",
        });
        t.apply(
            "milestone/team/emea/deals_won/2026-Q4/100",
            Some(milestone.to_string().as_bytes()),
            now,
        );
        let got = shown(&mut t, now);
        assert_eq!(
            got,
            vec![
                (
                    "sales_celebration_timestamp_seconds".to_owned(),
                    "milestone/team/emea/deals_won/2026-Q4/100".to_owned(),
                    ts("2026-12-02T11:00:00Z") as f64
                ),
                (
                    "sales_celebration_amount".to_owned(),
                    "big_win/b".to_owned(),
                    70000.0
                ),
                (
                    "sales_celebration_timestamp_seconds".to_owned(),
                    "big_win/b".to_owned(),
                    ts("2026-12-02T10:00:00Z") as f64
                ),
            ]
        );
        let team_milestone = t.series(now).into_iter().next().expect("a series");
        assert!(team_milestone
            .labels
            .contains(&("headline", "100 % of the 2026-Q4 deals won target".into())));
        assert!(team_milestone.labels.contains(&("team", "emea".into())));
        assert!(team_milestone.labels.contains(&("rep", "".into())));
        // A newer milestone replaces the older one, not the big win.
        let later = milestone
            .to_string()
            .replace("11:00", "12:00")
            .replace("100", "150");
        t.apply("milestone/later", Some(later.as_bytes()), now);
        let ids: Vec<String> = shown(&mut t, now).into_iter().map(|s| s.1).collect();
        assert_eq!(ids, ["milestone/later", "big_win/b", "big_win/b"]);
        // A tombstone removes its celebration; the next newest of its kind shows.
        t.apply("big_win/b", None, now);
        let ids: Vec<String> = shown(&mut t, now).into_iter().map(|s| s.1).collect();
        assert_eq!(ids, ["milestone/later", "big_win/a", "big_win/a"]);
        // The day turns: nothing is left.
        assert!(t.series(ts("2026-12-03T00:00:00Z")).is_empty());
    }

    #[test]
    fn the_day_is_the_local_day_and_unknown_records_are_skipped() {
        let cal = Calendar::new("America/New_York", 1).expect("calendar");
        let mut t = Ticker::new(10, cal);
        // 03:00 UTC on the 2nd is still the 1st in New York.
        let now = ts("2026-12-02T03:00:00Z");
        t.apply(
            "big_win/x",
            Some(&win("x", "1", "2026-12-01T06:00:00Z")),
            now,
        );
        t.apply("other", Some(br#"{"celebration":"party"}"#), now);
        t.apply("broken", Some(b"{"), now);
        let ids: Vec<String> = shown(&mut t, now).into_iter().map(|s| s.1).collect();
        assert_eq!(ids, ["big_win/x", "big_win/x"]);
        let leader = json!({
            "celebration": "new_leader", "team": "emea", "rep": "rep-2",
            "metric": "bookings", "period": "2026-Q4", "at": "2026-12-02T04:00:00Z",
        });
        t.apply(
            "new_leader/emea/bookings/2026-Q4/rep-2",
            Some(leader.to_string().as_bytes()),
            now,
        );
        let first = t.series(now).into_iter().next().expect("a series");
        assert!(first.labels.contains(&("rep", "rep-2".into())));
        assert!(first.labels.contains(&(
            "headline",
            "New number one of the team, 2026-Q4 bookings".into()
        )));
    }
}
