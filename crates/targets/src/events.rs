//! Alerts and celebrations as events, exactly once per transition.
//!
//! The state that decides whether an event is new — which alerts are firing, which
//! celebrations were already sent — is restored from the output topics themselves at start-up
//! (`restore_*`), so a restart or a replay never repeats an event that reached its topic.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::json;

use crate::board::Out;

/// When a drifting subject alerts, and which attainment milestones are celebrated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventRules {
    /// A pace ratio below this is drifting.
    pub pace_threshold: f64,
    /// A firing alert resolves only above `pace_threshold + hysteresis`.
    pub hysteresis: f64,
    /// How long the pace must stay below the threshold before the alert fires.
    pub hold_seconds: i64,
    /// No alert before this share of the period has elapsed.
    pub min_elapsed: f64,
    /// Attainment milestones, in percent.
    pub milestones: Vec<u32>,
    /// A deal won for at least this amount (reporting currency) is celebrated by the deals
    /// service.
    pub big_deal_amount: rust_decimal::Decimal,
    /// How many of today's celebrations the sales floor's ticker shows, newest first.
    pub celebrations_shown: usize,
}

impl Default for EventRules {
    fn default() -> Self {
        EventRules {
            pace_threshold: 0.8,
            hysteresis: 0.05,
            hold_seconds: 1800,
            min_elapsed: 0.2,
            milestones: vec![50, 75, 100, 150],
            big_deal_amount: rust_decimal::Decimal::from(50_000),
            celebrations_shown: 10,
        }
    }
}

/// Which output topic an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTopic {
    Alerts,
    Celebrations,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: EventTopic,
    pub key: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AlertState {
    /// Below the threshold since this instant, not long enough yet.
    Pending(i64),
    Firing(i64),
}

/// Remembers alert states, sent celebrations and team leaders between evaluations.
#[derive(Debug, Default)]
pub struct Notifier {
    rules: EventRules,
    alerts: HashMap<String, AlertState>,
    celebrated: HashSet<String>,
    leaders: HashMap<String, String>,
}

fn label<'a>(o: &'a Out, name: &str) -> Option<&'a str> {
    o.labels
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// The subject and what it is measured on, from a target series' labels.
fn subject(o: &Out) -> (String, String, String, String) {
    let scope = o
        .family
        .strip_prefix("sales_")
        .and_then(|f| f.split('_').next())
        .unwrap_or_default()
        .to_owned();
    let id = match scope.as_str() {
        "rep" => label(o, "rep").unwrap_or_default().to_owned(),
        "team" => label(o, "team").unwrap_or_default().to_owned(),
        _ => "org".to_owned(),
    };
    let metric = match label(o, "kind") {
        Some(k) => format!("{}:{k}", label(o, "metric").unwrap_or_default()),
        None => label(o, "metric").unwrap_or_default().to_owned(),
    };
    (
        scope,
        id,
        metric,
        label(o, "period").unwrap_or_default().to_owned(),
    )
}

/// The ramp share of each rep in ramp, by rep and period (`sales_rep_ramp_ratio`).
fn ramps(outs: &[Out]) -> HashMap<(&str, &str), f64> {
    outs.iter()
        .filter(|o| o.family == "sales_rep_ramp_ratio")
        .filter_map(|o| Some(((label(o, "rep")?, label(o, "period")?), o.value)))
        .collect()
}

fn rfc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Notifier {
    pub fn new(rules: EventRules) -> Notifier {
        Notifier {
            rules,
            ..Notifier::default()
        }
    }

    /// Replays one record of the alerts topic read back at start-up.
    pub fn restore_alert(&mut self, key: &str, value: Option<&serde_json::Value>) {
        match value {
            Some(v) if v["state"] == "firing" => {
                let since = v["since"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|d| d.timestamp())
                    .unwrap_or_default();
                self.alerts
                    .insert(key.to_owned(), AlertState::Firing(since));
            }
            _ => {
                self.alerts.remove(key);
            }
        }
    }

    /// Replays one record of the celebrations topic read back at start-up.
    pub fn restore_celebration(&mut self, key: &str) {
        self.celebrated.insert(key.to_owned());
    }

    pub fn firing(&self) -> usize {
        self.alerts
            .values()
            .filter(|s| matches!(s, AlertState::Firing(_)))
            .count()
    }

    /// The events that the series at `now` cause.
    pub fn evaluate(&mut self, outs: &[Out], now: i64) -> Vec<Event> {
        let mut events = Vec::new();
        let elapsed: HashMap<&str, f64> = outs
            .iter()
            .filter(|o| o.family == "sales_period_elapsed_ratio")
            .filter_map(|o| Some((label(o, "period")?, o.value)))
            .collect();
        let mut seen = HashSet::new();
        let ramps = ramps(outs);
        for o in outs.iter().filter(|o| o.family.ends_with("_pace_ratio")) {
            let (scope, id, metric, period) = subject(o);
            // A rep in ramp is measured against its ramped target; the record says so.
            let ramp = (scope == "rep")
                .then(|| ramps.get(&(id.as_str(), period.as_str())).copied())
                .flatten();
            let key = format!("pace/{scope}/{id}/{metric}/{period}");
            seen.insert(key.clone());
            let share = elapsed.get(period.as_str()).copied().unwrap_or_default();
            let below = o.value < self.rules.pace_threshold && share >= self.rules.min_elapsed;
            let record = |state: &str, since: i64| {
                let mut value = json!({
                    "alert_id": key, "alert": "behind_pace", "state": state,
                    "subject": {"scope": scope, "id": id, "team": label(o, "team")},
                    "metric": metric, "period": period, "value": o.value,
                    "threshold": self.rules.pace_threshold, "since": rfc(since), "at": rfc(now),
                });
                if let Some(r) = ramp {
                    value["ramp_ratio"] = json!(r);
                }
                Event {
                    topic: EventTopic::Alerts,
                    key: key.clone(),
                    value,
                }
            };
            match self.alerts.get(&key).copied() {
                None if below => {
                    if self.rules.hold_seconds <= 0 {
                        self.alerts.insert(key.clone(), AlertState::Firing(now));
                        events.push(record("firing", now));
                    } else {
                        self.alerts.insert(key.clone(), AlertState::Pending(now));
                    }
                }
                Some(AlertState::Pending(since))
                    if below && now - since >= self.rules.hold_seconds =>
                {
                    self.alerts.insert(key.clone(), AlertState::Firing(since));
                    events.push(record("firing", since));
                }
                Some(AlertState::Pending(_)) if below => {}
                Some(AlertState::Pending(_)) => {
                    self.alerts.remove(&key);
                }
                Some(AlertState::Firing(_))
                    if o.value > self.rules.pace_threshold + self.rules.hysteresis =>
                {
                    self.alerts.remove(&key);
                    events.push(record("resolved", now));
                }
                _ => {}
            }
        }
        // An alert whose series is gone (target removed, period over) resolves.
        let gone: Vec<String> = self
            .alerts
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(AlertState::Firing(since)) = self.alerts.remove(&key) {
                events.push(Event {
                    topic: EventTopic::Alerts,
                    key: key.clone(),
                    value: json!({"alert_id": key, "alert": "behind_pace", "state": "resolved",
                        "reason": "series gone", "since": rfc(since), "at": rfc(now)}),
                });
            }
        }
        self.milestones(outs, now, &mut events);
        self.leaders(outs, now, &mut events);
        events
    }

    fn celebrate(&mut self, key: String, value: serde_json::Value, events: &mut Vec<Event>) {
        if self.celebrated.insert(key.clone()) {
            events.push(Event {
                topic: EventTopic::Celebrations,
                key,
                value,
            });
        }
    }

    fn milestones(&mut self, outs: &[Out], now: i64, events: &mut Vec<Event>) {
        for o in outs.iter().filter(|o| {
            o.family == "sales_rep_attainment_ratio" || o.family == "sales_team_attainment_ratio"
        }) {
            let (scope, id, metric, period) = subject(o);
            for m in self.rules.milestones.clone() {
                if o.value * 100.0 >= f64::from(m) {
                    let key = format!("milestone/{scope}/{id}/{metric}/{period}/{m}");
                    let value = json!({
                        "celebration": "milestone", "milestone_percent": m,
                        "subject": {"scope": scope, "id": id, "team": label(o, "team")},
                        "metric": metric, "period": period, "attainment": o.value, "at": rfc(now),
                    });
                    self.celebrate(key, value, events);
                }
            }
        }
    }

    /// A new sole number one of a team's quarter bookings leaderboard.
    fn leaders(&mut self, outs: &[Out], now: i64, events: &mut Vec<Event>) {
        let mut tops: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for o in outs.iter().filter(|o| {
            o.family == "sales_rep_rank"
                && o.value == 1.0
                && label(o, "among") == Some("team")
                && label(o, "metric") == Some("bookings")
                && label(o, "window") == Some("qtd")
        }) {
            if let (Some(team), Some(rep)) = (label(o, "team"), label(o, "rep")) {
                tops.entry(team).or_default().push(rep);
            }
        }
        let quarter = outs
            .iter()
            .find(|o| {
                o.family == "sales_period_elapsed_ratio"
                    && label(o, "period_type") == Some("quarter")
            })
            .and_then(|o| label(o, "period"))
            .unwrap_or_default()
            .to_owned();
        for (team, reps) in tops {
            let [rep] = reps.as_slice() else { continue };
            let previous = self.leaders.insert(team.to_owned(), (*rep).to_owned());
            // The first leader seen after a start is not news; a change is.
            if previous.is_some_and(|p| p != *rep) {
                let key = format!("new_leader/{team}/bookings/{quarter}/{rep}");
                let value = json!({
                    "celebration": "new_leader", "team": team, "rep": rep,
                    "metric": "bookings", "period": quarter, "at": rfc(now),
                });
                self.celebrate(key, value, events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(rep: &str, v: f64) -> Out {
        Out {
            family: "sales_rep_pace_ratio".into(),
            labels: vec![
                ("rep", rep.into()),
                ("team", "x".into()),
                ("metric", "bookings".into()),
                ("period", "2026-Q4".into()),
                ("period_type", "quarter".into()),
            ],
            value: v,
        }
    }

    fn elapsed(v: f64) -> Out {
        Out {
            family: "sales_period_elapsed_ratio".into(),
            labels: vec![
                ("period", "2026-Q4".into()),
                ("period_type", "quarter".into()),
            ],
            value: v,
        }
    }

    fn states(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| e.value["state"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn an_alert_on_a_rep_in_ramp_says_so() {
        let mut n = Notifier::new(EventRules {
            hold_seconds: 0,
            ..EventRules::default()
        });
        let ramp = Out {
            family: "sales_rep_ramp_ratio".into(),
            labels: vec![
                ("rep", "a".into()),
                ("team", "x".into()),
                ("period", "2026-Q4".into()),
                ("period_type", "quarter".into()),
            ],
            value: 0.5,
        };
        let events = n.evaluate(&[pace("a", 0.5), pace("b", 0.5), elapsed(0.5), ramp], 0);
        let by_rep = |rep: &str| {
            events
                .iter()
                .find(|e| e.value["subject"]["id"] == rep)
                .map(|e| e.value.get("ramp_ratio").cloned())
        };
        assert_eq!(by_rep("a"), Some(Some(json!(0.5))));
        assert_eq!(by_rep("b"), Some(None), "fully ramped: no ramp_ratio");
    }

    #[test]
    fn fires_after_the_hold_resolves_above_the_margin_and_never_flaps_inside_it() {
        let mut n = Notifier::new(EventRules {
            hold_seconds: 60,
            ..EventRules::default()
        });
        assert!(n.evaluate(&[pace("a", 0.5), elapsed(0.5)], 0).is_empty());
        assert!(n.evaluate(&[pace("a", 0.5), elapsed(0.5)], 59).is_empty());
        assert_eq!(
            states(&n.evaluate(&[pace("a", 0.5), elapsed(0.5)], 60)),
            ["firing"]
        );
        assert!(
            n.evaluate(&[pace("a", 0.84), elapsed(0.5)], 70).is_empty(),
            "inside the margin"
        );
        assert!(
            n.evaluate(&[pace("a", 0.79), elapsed(0.5)], 80).is_empty(),
            "still firing"
        );
        assert_eq!(
            states(&n.evaluate(&[pace("a", 0.86), elapsed(0.5)], 90)),
            ["resolved"]
        );
        // A dip shorter than the hold does not fire.
        assert!(n.evaluate(&[pace("a", 0.5), elapsed(0.5)], 100).is_empty());
        assert!(n.evaluate(&[pace("a", 0.9), elapsed(0.5)], 120).is_empty());
        assert!(n.evaluate(&[pace("a", 0.5), elapsed(0.5)], 130).is_empty());
        assert!(n.evaluate(&[pace("a", 0.5), elapsed(0.5)], 189).is_empty());
        assert_eq!(n.evaluate(&[pace("a", 0.5), elapsed(0.5)], 190).len(), 1);
    }

    #[test]
    fn no_alert_early_in_the_period_and_none_repeated_after_a_restart() {
        let mut n = Notifier::new(EventRules {
            hold_seconds: 0,
            ..EventRules::default()
        });
        assert!(n.evaluate(&[pace("a", 0.1), elapsed(0.1)], 0).is_empty());
        let fired = n.evaluate(&[pace("a", 0.1), elapsed(0.3)], 10);
        assert_eq!(states(&fired), ["firing"]);
        let mut restarted = Notifier::new(EventRules {
            hold_seconds: 0,
            ..EventRules::default()
        });
        restarted.restore_alert(&fired[0].key, Some(&fired[0].value));
        assert!(restarted
            .evaluate(&[pace("a", 0.1), elapsed(0.3)], 20)
            .is_empty());
        assert_eq!(restarted.firing(), 1);
    }

    #[test]
    fn milestones_fire_once_each_also_after_a_restart() {
        let att = |v: f64| Out {
            family: "sales_team_attainment_ratio".into(),
            labels: vec![
                ("team", "x".into()),
                ("metric", "bookings".into()),
                ("period", "2026-Q4".into()),
            ],
            value: v,
        };
        let mut n = Notifier::new(EventRules::default());
        assert_eq!(n.evaluate(&[att(0.8)], 0).len(), 2);
        assert!(n.evaluate(&[att(0.8)], 1).is_empty());
        let all = n.evaluate(&[att(1.6)], 2);
        assert_eq!(all.len(), 2);
        let mut restarted = Notifier::new(EventRules::default());
        for k in ["50", "75", "100", "150"] {
            restarted.restore_celebration(&format!("milestone/team/x/bookings/2026-Q4/{k}"));
        }
        assert!(restarted.evaluate(&[att(1.6)], 3).is_empty());
    }
}
