//! Turns "the current series of these subjects" into per-series changes: new or changed
//! values, and series that disappeared. Feeds both `/metrics` and the `sales.metrics` topic.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use rust_decimal::Decimal;
use siphasher::sip128::SipHasher13;

use crate::series::{Series, Subject, SubjectSeries};

/// One series that changed: its new value, or `None` when it no longer exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub series: Option<Series>,
}

/// What was last emitted of a series: its key, its value and the rep's name it carried, and
/// the last round (call of [`Differ::diff`] for its subject) that saw it.
#[derive(Debug)]
struct Emitted {
    key: Box<str>,
    value: Decimal,
    name: Option<Arc<str>>,
    round: u32,
}

/// A series' key as the differ looks it up: its 128-bit SipHash-1-3 under keys drawn at
/// random for each differ. A tick compares every series of each subject it touched, and a
/// lookup by the key's text read that text from wherever the key was allocated: a cache miss
/// per series, and a seventh of a tick with 20 busy reps (docs/benchmarks.md, "What a tick
/// exports, and the differ looking series up by their keys' hashes"). The hash sits in the
/// table itself. Two keys of a subject would have to share all 128 bits to be taken for one
/// another: about n² / 2¹²⁹ among n keys.
type KeyHash = u128;

/// Hashes a [`KeyHash`], already a hash, to its low 64 bits.
#[derive(Debug, Default, Clone, Copy)]
struct Rehash(u64);

impl std::hash::Hasher for Rehash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, h: u128) {
        self.0 = h as u64;
    }
}

type ByKey = HashMap<KeyHash, Emitted, std::hash::BuildHasherDefault<Rehash>>;

/// The last emitted value of every series, by subject.
#[derive(Debug)]
pub struct Differ {
    by_subject: HashMap<Subject, ByKey>,
    round: u32,
    /// The key being looked up: an unchanged series costs no allocation.
    key: String,
    hasher: SipHasher13,
}

impl Default for Differ {
    fn default() -> Self {
        // Keys of their own for each differ, from std's per-process random keys.
        let random = std::collections::hash_map::RandomState::new();
        Differ {
            by_subject: HashMap::new(),
            round: 0,
            key: String::new(),
            hasher: SipHasher13::new_with_keys(random.hash_one(0u8), random.hash_one(1u8)),
        }
    }
}

impl Differ {
    /// Remembers a series emitted earlier (for example read back from `sales.metrics` after a
    /// restart), so that a series gone meanwhile gets its tombstone.
    pub fn seed(&mut self, subject: Subject, key: String, value: Decimal, name: Option<&str>) {
        let hash = self.hasher.hash(key.as_bytes()).as_u128();
        let emitted = Emitted {
            key: key.into_boxed_str(),
            value,
            name: name.map(Arc::from),
            round: self.round,
        };
        self.by_subject
            .entry(subject)
            .or_default()
            .insert(hash, emitted);
    }

    /// Every subject with at least one series remembered.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        self.by_subject.keys()
    }

    pub fn series(&self) -> usize {
        self.by_subject.values().map(|m| m.len()).sum()
    }

    /// [`Differ::diff`] of `current`, where every subject remembered that `keep` picks and
    /// `current` lacks is gone: all its series get tombstones.
    pub fn diff_with_gone(
        &mut self,
        mut current: Vec<SubjectSeries>,
        keep: impl Fn(&Subject) -> bool,
    ) -> Vec<Change> {
        let present: std::collections::HashSet<&Subject> =
            current.iter().map(|s| &s.subject).collect();
        let gone: Vec<Subject> = self
            .by_subject
            .keys()
            .filter(|s| keep(s) && !present.contains(s))
            .cloned()
            .collect();
        current.extend(gone.into_iter().map(|subject| SubjectSeries {
            subject,
            series: Vec::new(),
        }));
        self.diff(current)
    }

    /// The changes that bring what was emitted to the given current series of each subject:
    /// new and changed values, and tombstones for the subject's series not among them.
    pub fn diff(&mut self, subjects: Vec<SubjectSeries>) -> Vec<Change> {
        let Differ {
            by_subject,
            round,
            key,
            hasher,
        } = self;
        // Sized for every series changing, as at a take-over or after a backlog: growing a
        // list of hundreds of thousands of changes by doubling copies it again and again.
        let mut out = Vec::with_capacity(subjects.iter().map(|s| s.series.len()).sum());
        for s in subjects {
            *round = round.wrapping_add(1);
            let round = *round;
            if !by_subject.contains_key(&s.subject) {
                if s.series.is_empty() {
                    continue;
                }
                by_subject.insert(s.subject.clone(), ByKey::default());
            }
            let Some(emitted) = by_subject.get_mut(&s.subject) else {
                continue;
            };
            let mut seen = 0;
            for x in s.series {
                key.clear();
                write_series_key(key, &x);
                let hash = hasher.hash(key.as_bytes()).as_u128();
                match emitted.get_mut(&hash) {
                    Some(e) => {
                        if e.round != round {
                            e.round = round;
                            seen += 1;
                        }
                        if e.value != x.value || e.name != x.name {
                            e.value = x.value;
                            e.name.clone_from(&x.name);
                            out.push(Change {
                                key: key.clone(),
                                series: Some(x),
                            });
                        }
                    }
                    None => {
                        let e = Emitted {
                            key: key.as_str().into(),
                            value: x.value,
                            name: x.name.clone(),
                            round,
                        };
                        emitted.insert(hash, e);
                        seen += 1;
                        out.push(Change {
                            key: key.clone(),
                            series: Some(x),
                        });
                    }
                }
            }
            if emitted.len() > seen {
                emitted.retain(|_, e| {
                    let keep = e.round == round;
                    if !keep {
                        out.push(Change {
                            key: e.key.to_string(),
                            series: None,
                        });
                    }
                    keep
                });
            }
            if emitted.is_empty() {
                by_subject.remove(&s.subject);
            }
        }
        out
    }
}

/// Escapes `/` and `%` so that any id fits in one key segment.
fn push_escaped(out: &mut String, s: &str) {
    // Ids and labels seldom hold either: copied whole, not a character at a time.
    if !s.bytes().any(|b| b == b'%' || b == b'/') {
        out.push_str(s);
        return;
    }
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
    write_series_key(&mut k, s);
    k
}

fn write_series_key(k: &mut String, s: &Series) {
    k.push_str(s.scope.label());
    k.push('/');
    push_escaped(k, s.id());
    k.push('/');
    k.push_str(s.metric.name());
    k.push('/');
    let mut first = true;
    if s.scope == crate::Scope::Rep {
        if let Some(t) = &s.team {
            k.push_str("team=");
            push_escaped(k, t);
            first = false;
        }
    }
    for (name, v) in s.metric.extra_pairs(&s.extra) {
        if !first {
            k.push(',');
        }
        first = false;
        k.push_str(name);
        k.push('=');
        push_escaped(k, v);
    }
    k.push('/');
    if let Some(w) = s.window {
        k.push_str(w.label());
    }
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

/// The series a key written by [`series_key`] names, with the value and rep's name published
/// under it: what a board read back from `sales.metrics` shows. `None` when the key is not
/// one that [`series_key`] writes for the series parsed. (A label value holding `,name=` of a
/// later label gives a key that another series has too; it is read as the one whose values
/// hold no such text.)
pub fn series_of_key(key: &str, value: Decimal, name: Option<&str>) -> Option<Series> {
    let mut parts = key.split('/');
    let (scope, id, metric, labels, window) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() {
        return None;
    }
    let scope = crate::Scope::ALL.into_iter().find(|s| s.label() == scope)?;
    let metric = crate::Metric::from_name(metric)?;
    let window = match window {
        "" => None,
        w => Some(crate::Window::from_label(w)?),
    };
    let extra_names = metric.extra_labels();
    let mut names: Vec<&str> = Vec::with_capacity(extra_names.len() + 1);
    if scope == crate::Scope::Rep {
        names.push("team");
    }
    names.extend_from_slice(extra_names);
    let mut values: Vec<Option<Arc<str>>> = vec![None; names.len()];
    let mut rest = labels;
    let mut next = 0;
    while !rest.is_empty() {
        let i = (next..names.len()).find(|&i| {
            rest.strip_prefix(names[i])
                .is_some_and(|r| r.starts_with('='))
        })?;
        let after = &rest[names[i].len() + 1..];
        // The value runs to the next label this metric may carry, or to the end.
        let end = names[i + 1..]
            .iter()
            .filter_map(|n| after.find(&format!(",{n}=")))
            .min()
            .unwrap_or(after.len());
        values[i] = Some(Arc::from(unescape(&after[..end])));
        rest = after[end..].strip_prefix(',').unwrap_or(&after[end..]);
        next = i + 1;
    }
    let id: Arc<str> = Arc::from(unescape(id));
    let mut values = values.into_iter();
    let label_team = if scope == crate::Scope::Rep {
        values.next().flatten()
    } else {
        None
    };
    let mut extra: crate::Extra = Default::default();
    for (slot, v) in extra.iter_mut().zip(values) {
        *slot = v;
    }
    let (rep, team, region) = match scope {
        crate::Scope::Rep => (Some(id), label_team, None),
        crate::Scope::Team => (None, Some(id), None),
        crate::Scope::Region => (None, None, Some(id)),
        crate::Scope::Org => (None, None, None),
    };
    let series = Series {
        scope,
        metric,
        rep,
        team,
        region,
        window,
        extra,
        value,
        name: name.map(Arc::from),
    };
    (series_key(&series) == key).then_some(series)
}

fn unescape(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Metric, Scope, Window};
    use std::collections::BTreeMap;
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
    fn subjects_missing_from_the_current_series_are_gone_where_kept() {
        let subject = |r: &str| Subject::Rep(Arc::from(r));
        let of = |r: &str| SubjectSeries {
            subject: subject(r),
            series: vec![rep_series(r, 1)],
        };
        let mut d = Differ::default();
        d.diff(vec![of("a"), of("b"), of("c")]);
        let changes = d.diff_with_gone(vec![of("a")], |s| *s != subject("c"));
        assert_eq!(
            changes,
            vec![Change {
                key: series_key(&rep_series("b", 1)),
                series: None
            }]
        );
        assert_eq!(d.series(), 2, "c is kept: not this caller's to remove");
    }

    #[test]
    fn a_board_read_back_gives_the_series_its_keys_were_written_for() {
        let a = |s: &str| Some(Arc::from(s));
        let mut forecast = rep_series("r,1", 7);
        forecast.metric = Metric::Forecast;
        forecast.window = None;
        forecast.extra = [a("commit"), a("quarter"), a("2026-Q4")];
        forecast.name = a("Ada, L.");
        let mut info = rep_series("r2", 1);
        info.metric = Metric::Info;
        info.window = None;
        info.extra = [a("Bo"), None, a("2026-01-05")];
        let team = Series {
            scope: Scope::Team,
            rep: None,
            team: a("t/1"),
            ..rep_series("x", 3)
        };
        let region = Series {
            scope: Scope::Region,
            rep: None,
            team: None,
            region: a("emea"),
            metric: Metric::Bookings,
            extra: [None, None, None],
            window: Some(Window::Qtd),
            ..rep_series("x", 4)
        };
        let org = Series {
            scope: Scope::Org,
            rep: None,
            team: None,
            metric: Metric::OpenPipeline,
            extra: [a("stage,=1"), None, None],
            window: None,
            ..rep_series("x", 5)
        };
        for s in [rep_series("a/b%c", 1), forecast, info, team, region, org] {
            let k = series_key(&s);
            assert_eq!(
                series_of_key(&k, s.value, s.name.as_deref()).as_ref(),
                Some(&s),
                "{k}"
            );
        }
        assert_eq!(
            series_of_key("rep/r/no_such_metric//1h", Decimal::ONE, None),
            None
        );
        assert_eq!(
            series_of_key("rep/r/activities/kind=call/2h", Decimal::ONE, None),
            None
        );
        assert_eq!(
            series_of_key("rep/r/activities/colour=red/1h", Decimal::ONE, None),
            None
        );
    }

    proptest::proptest! {
        /// A key read back names the series it was written for, or none: never another one,
        /// whatever the ids hold and whatever the label values hold short of `=` (with it, a
        /// value can end in `,name=` of a later label, and two series share a key).
        #[test]
        fn a_key_read_back_never_names_another_series(
            rep in "[a-c,=/%]{0,4}",
            team in proptest::option::of("[a-c,/%]{0,4}"),
            kinds in proptest::collection::vec(proptest::option::of("[a-c,/%]{0,4}"), 3),
            metric in 0usize..Metric::ALL.len(),
            window in proptest::option::of(0usize..Window::ALL.len()),
        ) {
            let metric = Metric::ALL[metric];
            let mut extra: crate::Extra = Default::default();
            for (slot, v) in extra.iter_mut().zip(kinds).take(metric.extra_labels().len()) {
                *slot = v.map(|v| Arc::from(v.as_str()));
            }
            let s = Series {
                metric,
                team: team.map(|t| Arc::from(t.as_str())),
                window: window.map(|w| Window::ALL[w]),
                extra,
                ..rep_series(&rep, 2)
            };
            let k = series_key(&s);
            if let Some(got) = series_of_key(&k, s.value, None) {
                proptest::prop_assert_eq!(got, s);
            }
        }

        /// Applying the changes of every round to a plain map gives the latest series of every
        /// subject, and only keys whose value changed are emitted.
        #[test]
        fn changes_replay_to_the_latest_series_and_nothing_else(
            rounds in proptest::collection::vec(
                // Each subject at most once a round, as a drain gives them.
                proptest::collection::btree_map(
                    0usize..3,
                    proptest::collection::btree_map(0usize..6, 0i64..3, 0..6),
                    0..4,
                ),
                1..12,
            ),
            seeded in proptest::collection::btree_map(0usize..6, 0i64..3, 0..4),
        ) {
            let reps = ["a", "b", "c"];
            let windows = [Window::H1, Window::H24, Window::D7];
            let series = |rep: &str, slot: usize, value: i64| {
                let mut x = rep_series(rep, value);
                x.window = Some(windows[slot % 3]);
                x.extra[0] = Some(Arc::from(if slot < 3 { "call" } else { "email" }));
                x
            };
            let mut d = Differ::default();
            let mut applied: BTreeMap<String, Decimal> = BTreeMap::new();
            // What a restart reads back from the topic for rep "a".
            for (slot, v) in &seeded {
                let x = series("a", *slot, *v);
                d.seed(Subject::Rep(Arc::from("a")), series_key(&x), x.value, None);
                applied.insert(series_key(&x), x.value);
            }
            let mut latest = applied.clone();
            for round in rounds {
                let mut input = Vec::new();
                for (r, values) in round {
                    let rep = reps[r];
                    latest.retain(|k, _| subject_of_key(k) != Some(Subject::Rep(Arc::from(rep))));
                    let xs: Vec<Series> = values.iter().map(|(slot, v)| series(rep, *slot, *v)).collect();
                    for x in &xs {
                        latest.insert(series_key(x), x.value);
                    }
                    input.push(SubjectSeries { subject: Subject::Rep(Arc::from(rep)), series: xs });
                }
                let before = applied.clone();
                let changes = d.diff(input);
                for c in &changes {
                    match &c.series {
                        Some(x) => applied.insert(c.key.clone(), x.value),
                        None => applied.remove(&c.key),
                    };
                }
                proptest::prop_assert_eq!(&applied, &latest);
                let moved = latest.iter().filter(|(k, v)| before.get(*k) != Some(*v)).count()
                    + before.keys().filter(|k| !latest.contains_key(*k)).count();
                proptest::prop_assert_eq!(changes.len(), moved);
                proptest::prop_assert_eq!(d.series(), latest.len());
            }
        }
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
