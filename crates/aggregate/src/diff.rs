//! Turns "the current series of these subjects" into per-series changes: new or changed
//! values, and series that disappeared. Feeds both `/metrics` and the `sales.metrics` topic.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::series::{Series, Subject, SubjectSeries};

/// One series that changed: its new value, or `None` when it no longer exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub series: Option<Series>,
}

/// What was last emitted of a series: its value, and the rep's name it carried.
type Emitted = (Decimal, Option<Arc<str>>);

/// The last emitted value of every series, by subject.
#[derive(Debug, Default)]
pub struct Differ {
    by_subject: HashMap<Subject, HashMap<String, Emitted>>,
}

impl Differ {
    /// Remembers a series emitted earlier (for example read back from `sales.metrics` after a
    /// restart), so that a series gone meanwhile gets its tombstone.
    pub fn seed(&mut self, subject: Subject, key: String, value: Decimal, name: Option<&str>) {
        self.by_subject
            .entry(subject)
            .or_default()
            .insert(key, (value, name.map(Arc::from)));
    }

    /// Every subject with at least one series remembered.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        self.by_subject.keys()
    }

    pub fn series(&self) -> usize {
        self.by_subject.values().map(HashMap::len).sum()
    }

    pub fn diff(&mut self, subjects: Vec<SubjectSeries>) -> Vec<Change> {
        let mut out = Vec::new();
        for s in subjects {
            let old = self.by_subject.remove(&s.subject).unwrap_or_default();
            let mut new = HashMap::with_capacity(s.series.len());
            for x in s.series {
                let key = series_key(&x);
                let emitted = (x.value, x.name.clone());
                if old.get(&key) != Some(&emitted) {
                    out.push(Change {
                        key: key.clone(),
                        series: Some(x),
                    });
                }
                new.insert(key, emitted);
            }
            for k in old.into_keys() {
                if !new.contains_key(&k) {
                    out.push(Change {
                        key: k,
                        series: None,
                    });
                }
            }
            if !new.is_empty() {
                self.by_subject.insert(s.subject, new);
            }
        }
        out
    }
}

/// Escapes `/` and `%` so that any id fits in one key segment.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// The key of a series on `sales.metrics`: `scope/id/metric/labels/window`, where labels are
/// `name=value` pairs joined by `,` (the rep's team, then the extra label).
pub fn series_key(s: &Series) -> String {
    let mut k = String::with_capacity(64);
    k.push_str(s.scope.label());
    k.push('/');
    push_escaped(&mut k, s.id());
    k.push('/');
    k.push_str(s.metric.name());
    k.push('/');
    let mut first = true;
    if s.scope == crate::Scope::Rep {
        if let Some(t) = &s.team {
            k.push_str("team=");
            push_escaped(&mut k, t);
            first = false;
        }
    }
    for (name, v) in s.metric.extra_pairs(&s.extra) {
        if !first {
            k.push(',');
        }
        first = false;
        let _ = write!(k, "{name}=");
        push_escaped(&mut k, v);
    }
    k.push('/');
    if let Some(w) = s.window {
        k.push_str(w.label());
    }
    k
}

/// The subject a key belongs to, for keys written by [`series_key`].
pub fn subject_of_key(key: &str) -> Option<Subject> {
    let mut parts = key.splitn(3, '/');
    let scope = parts.next()?;
    let id = unescape(parts.next()?);
    match scope {
        "rep" => Some(Subject::Rep(id.into())),
        "team" => Some(Subject::Team(id.into())),
        "region" => Some(Subject::Region(id.into())),
        "org" => Some(Subject::Org),
        _ => None,
    }
}

/// The metric name segment of a key.
pub fn metric_of_key(key: &str) -> Option<&str> {
    key.split('/').nth(2)
}

/// Whether the series of a key written by [`series_key`] is the activities service's (see
/// [`Metric::of_activities`]); `None` for a key of no known metric.
pub fn of_activities(key: &str) -> Option<bool> {
    let metric = crate::Metric::from_name(metric_of_key(key)?)?;
    let measured = key
        .split('/')
        .nth(3)
        .and_then(|labels| labels.split(',').find_map(|l| l.strip_prefix("metric=")));
    Some(metric.of_activities(measured))
}

fn unescape(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Metric, Scope, Window};
    use std::sync::Arc;

    fn rep_series(rep: &str, value: i64) -> Series {
        Series {
            scope: Scope::Rep,
            metric: Metric::Activities,
            rep: Some(Arc::from(rep)),
            team: Some(Arc::from("t/1")),
            region: None,
            window: Some(Window::H1),
            extra: [Some(Arc::from("call")), None, None],
            value: Decimal::from(value),
            name: None,
        }
    }

    #[test]
    fn key_escapes_separators_and_round_trips_the_subject() {
        let s = rep_series("a/b%c", 1);
        let k = series_key(&s);
        assert_eq!(k, "rep/a%2Fb%25c/activities/team=t%2F1,kind=call/1h");
        assert_eq!(subject_of_key(&k), Some(Subject::Rep(Arc::from("a/b%c"))));
        assert_eq!(metric_of_key(&k), Some("activities"));
    }

    #[test]
    fn unchanged_values_are_not_emitted_and_vanished_series_get_tombstones() {
        let mut d = Differ::default();
        let subject = Subject::Rep(Arc::from("r"));
        let one = SubjectSeries {
            subject: subject.clone(),
            series: vec![rep_series("r", 1)],
        };
        assert_eq!(d.diff(vec![one.clone()]).len(), 1);
        assert!(d.diff(vec![one]).is_empty());
        let gone = d.diff(vec![SubjectSeries {
            subject,
            series: vec![],
        }]);
        assert_eq!(gone.len(), 1);
        assert!(gone[0].series.is_none());
        assert_eq!(d.series(), 0);
    }
}
