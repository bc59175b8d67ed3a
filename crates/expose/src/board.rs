//! The live board: the current value of every business series, shared between the ingest
//! loop (which writes only the series that changed) and `/metrics` (which reads them all).
//! A sharded map keeps a scrape from ever holding a lock the ingest loop needs for long.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;

use dashmap::DashMap;
use rust_decimal::prelude::ToPrimitive;
use salespulse_aggregate::{Change, Metric, Scope, Window};

use crate::families::{family_name, help};
use crate::text;

/// A shown series, held in the map itself: a new value is written in place, and a scrape
/// reaches the series' labels from the map's own memory, one allocation away.
#[derive(Debug)]
struct Entry {
    scope: Scope,
    metric: Metric,
    /// The labels as the text format writes them (`{rep="a",window="qtd"}`; empty without
    /// labels), written when the series first shows: a key names one series, so its labels
    /// never change.
    labels: Box<str>,
    /// The labels as pairs, for the test that holds the text to the `prometheus` crate's.
    #[cfg(test)]
    pairs: Vec<(&'static str, Arc<str>)>,
    value: f64,
}

/// Which windows and families go to `/metrics` (`sales.metrics` always carries all).
#[derive(Debug, Clone, Default)]
pub struct Exposed {
    /// Window labels to expose; empty means all.
    pub windows: HashSet<Window>,
    /// Metric names (without scope) to expose; empty means all.
    pub metrics: HashSet<Metric>,
    /// Most series one family may hold on `/metrics` (0: no limit). New series beyond it are
    /// refused and counted, so that a flood of ids cannot exhaust memory or Prometheus.
    pub max_series_per_family: usize,
}

impl Exposed {
    /// Whether a series whose `window` and `metric` labels have these values is shown: the
    /// targets service's series, which name their window and the metric they measure in
    /// labels. An absent label, or a value that names no window or metric, admits it.
    pub fn admits_labels(&self, window: Option<&str>, metric: Option<&str>) -> bool {
        window
            .and_then(Window::from_label)
            .is_none_or(|w| self.shows_window(w))
            && metric
                .and_then(Metric::from_name)
                .is_none_or(|m| self.shows_metric(m))
    }

    fn admits(&self, metric: Metric, window: Option<Window>) -> bool {
        self.shows_metric(metric) && window.is_none_or(|w| self.shows_window(w))
    }

    fn shows_window(&self, w: Window) -> bool {
        self.windows.is_empty() || self.windows.contains(&w)
    }

    fn shows_metric(&self, m: Metric) -> bool {
        self.metrics.is_empty() || self.metrics.contains(&m)
    }
}

#[derive(Debug)]
pub struct Board {
    /// Looked up once per changed series per tick: a fast hash, seeded per process. In
    /// [`SHARDS`] shards, so that a scrape holds each one's lock only briefly.
    series: DashMap<String, Entry, foldhash::fast::RandomState>,
    exposed: Exposed,
    /// Series per family; written by the single loop that applies changes.
    counts: Mutex<HashMap<(Scope, Metric), usize>>,
    /// Bytes of each family's text at the last scrape, to size its piece at the next: a piece
    /// grown by doubling would hold up to twice its text.
    written: Mutex<HashMap<(Scope, Metric), usize>>,
    /// Series refused by the cap, per family name.
    refused: DashMap<String, u64>,
}

/// A series' labels in the order `/metrics` shows them.
fn label_pairs(s: &salespulse_aggregate::Series) -> Vec<(&'static str, Arc<str>)> {
    let mut labels: Vec<(&'static str, Arc<str>)> = Vec::with_capacity(4);
    if let Some(r) = &s.rep {
        labels.push(("rep", r.clone()));
    }
    if let Some(t) = &s.team {
        labels.push(("team", t.clone()));
    }
    if let Some(g) = &s.region {
        labels.push(("region", g.clone()));
    }
    for (name, v) in s.metric.extra_pairs(&s.extra) {
        labels.push((name, v.clone()));
    }
    if let Some(w) = s.window {
        labels.push(("window", Arc::from(w.label())));
    }
    labels
}

/// Shards of the board's map. A scrape holds one shard's lock while it writes that shard's
/// series, and the loop waits for it only when it changes a series of that shard: with
/// 10,000 reps (3.2 million series) a shard's part of a scrape takes one or two milliseconds.
const SHARDS: usize = 1024;

impl Default for Board {
    fn default() -> Self {
        Board::new(Exposed::default())
    }
}

impl Board {
    pub fn new(exposed: Exposed) -> Self {
        Board {
            series: DashMap::with_hasher_and_shard_amount(
                foldhash::fast::RandomState::default(),
                SHARDS,
            ),
            exposed,
            counts: Mutex::default(),
            written: Mutex::default(),
            refused: DashMap::new(),
        }
    }

    /// Series refused by the per-family cap since start, by family.
    pub fn refused(&self) -> Vec<(String, u64)> {
        self.refused
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    /// Removes every series (the instance no longer owns them).
    pub fn clear(&self) {
        if let Ok(mut counts) = self.counts.lock() {
            self.series.clear();
            counts.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn apply(&self, changes: &[Change]) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        let cap = self.exposed.max_series_per_family;
        for c in changes {
            match &c.series {
                None => {
                    if let Some((_, e)) = self.series.remove(&c.key) {
                        if let Some(n) = counts.get_mut(&(e.scope, e.metric)) {
                            *n = n.saturating_sub(1);
                        }
                    }
                }
                Some(s) if self.exposed.admits(s.metric, s.window) => {
                    let value = s.value.to_f64().unwrap_or(f64::NAN);
                    if let Some(mut shown) = self.series.get_mut(&c.key) {
                        shown.value = value;
                        continue;
                    }
                    let n = counts.entry((s.scope, s.metric)).or_default();
                    if cap > 0 && *n >= cap {
                        *self
                            .refused
                            .entry(family_name(s.scope, s.metric))
                            .or_default() += 1;
                        continue;
                    }
                    *n += 1;
                    let pairs = label_pairs(s);
                    let entry = Entry {
                        scope: s.scope,
                        metric: s.metric,
                        labels: text::labels(&pairs).into(),
                        #[cfg(test)]
                        pairs,
                        value,
                    };
                    self.series.insert(c.key.clone(), entry);
                }
                Some(_) => {}
            }
        }
    }

    /// Current value of one series by its `sales.metrics` key.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.series.get(key).map(|e| e.value)
    }

    /// Every business family in Prometheus' text format, one piece a family, families in a
    /// stable order, as the `prometheus` crate's encoder writes them (see [`crate::text`]).
    ///
    /// Each series is written into its family's piece as the map is walked: with millions of
    /// series, reaching each one is most of the cost, so none is reached twice, and the
    /// pieces are sent as they are rather than copied into one text.
    pub fn text(&self) -> Vec<Vec<u8>> {
        // One scrape at a time writes: each sizes its pieces by the last one's.
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut families: BTreeMap<(Scope, Metric), (String, Vec<u8>)> = BTreeMap::new();
        for e in self.series.iter() {
            let (name, piece) = families.entry((e.scope, e.metric)).or_insert_with(|| {
                let name = family_name(e.scope, e.metric);
                let last = written.get(&(e.scope, e.metric)).copied().unwrap_or(0);
                let mut piece = Vec::with_capacity(last + last / 64);
                text::gauge_header(&mut piece, &name, &help(e.scope, e.metric));
                (name, piece)
            });
            text::sample_labelled(piece, name, &e.labels, e.value);
        }
        written.clear();
        written.extend(families.iter().map(|(f, (_, piece))| (*f, piece.len())));
        families.into_values().map(|(_, piece)| piece).collect()
    }

    /// All business families, in a stable order, as the `prometheus` crate's structures.
    #[cfg(test)]
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{Gauge, LabelPair, Metric as PromMetric, MetricFamily, MetricType};
        let mut families: BTreeMap<(Scope, Metric), Vec<PromMetric>> = BTreeMap::new();
        for e in self.series.iter() {
            let mut m = PromMetric::default();
            m.set_label(
                e.pairs
                    .iter()
                    .map(|(n, v)| {
                        let mut l = LabelPair::default();
                        l.set_name((*n).to_owned());
                        l.set_value(v.to_string());
                        l
                    })
                    .collect(),
            );
            let mut g = Gauge::default();
            g.set_value(e.value);
            m.set_gauge(g);
            families.entry((e.scope, e.metric)).or_default().push(m);
        }
        families
            .into_iter()
            .map(|((scope, metric), metrics)| {
                let mut f = MetricFamily::default();
                f.set_name(family_name(scope, metric));
                f.set_help(help(scope, metric));
                f.set_field_type(MetricType::GAUGE);
                f.set_metric(metrics);
                f
            })
            .collect()
    }
}
