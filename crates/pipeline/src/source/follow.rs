//! Topics that a take-over reads whole: the metrics topic (what the board shows) and the
//! celebrations announced. An instance starts reading them while its state is restored, and
//! its first take-over reads only what came after, instead of reading both topics whole
//! once the state is there.

use std::collections::{BTreeMap, HashMap, HashSet};

use rdkafka::Message;
use rust_decimal::Decimal;
use salespulse_aggregate::{
    metric_of_key, series_of_key, subject_of_key, Differ, Metric, Series, Subject, SubjectSeries,
};
use salespulse_publish::PublishFormat;

use super::read_from;
use crate::config::Settings;
use crate::Error;

/// What is kept of a topic's records (the latest value of a key, a set of keys). A read that
/// fails leaves `at` where the last complete one ended, with part of what came after kept.
pub(crate) trait Follow {
    fn record(&mut self, key: &str, payload: Option<&[u8]>);
}

/// A topic read from its beginning once, and after that from where the last read ended.
pub(crate) struct Followed<T> {
    pub kept: T,
    topic: String,
    /// Partition -> offset of the first record not read.
    at: BTreeMap<i32, i64>,
}

impl<T: Follow> Followed<T> {
    pub fn new(topic: &str, kept: T) -> Followed<T> {
        Followed {
            kept,
            topic: topic.to_owned(),
            at: BTreeMap::new(),
        }
    }

    /// A topic read before up to `at` (partition -> offset of the first record not read),
    /// with what was kept of it.
    pub fn resumed(topic: &str, kept: T, at: BTreeMap<i32, i64>) -> Followed<T> {
        Followed {
            kept,
            topic: topic.to_owned(),
            at,
        }
    }

    /// What was kept, and where the last read ended.
    pub fn into_parts(self) -> (T, BTreeMap<i32, i64>) {
        (self.kept, self.at)
    }

    /// Reads each partition from where the last read ended (its beginning at first) to its
    /// current end, waiting for the transactions open on it, as a read of the whole topic
    /// does.
    pub async fn read_on(&mut self, settings: &Settings) -> Result<(), Error> {
        let kept = &mut self.kept;
        let at = read_from(settings, &self.topic, &self.at, |m| {
            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                kept.record(key, m.payload());
            }
        })
        .await?;
        self.at = at;
        Ok(())
    }
}

/// The keys of the celebrations announced.
#[derive(Debug, Default)]
pub(crate) struct Announced(pub HashSet<String>);

impl Follow for Announced {
    fn record(&mut self, key: &str, _: Option<&[u8]>) {
        self.0.insert(key.to_owned());
    }
}

/// A service's latest values on the compacted metrics topic.
pub(crate) struct Board {
    format: PublishFormat,
    names: Vec<&'static str>,
    activities: bool,
    latest: HashMap<String, Option<(Decimal, String)>>,
    /// Records of this service's metrics read.
    pub records: u64,
}

impl Board {
    /// The series of a service: of its metrics, and of the shared ones (consistency) those
    /// of what it measures.
    pub fn new(settings: &Settings, metrics: &'static [Metric]) -> Board {
        Board {
            format: settings.publish.format,
            names: metrics.iter().map(|m| m.name()).collect(),
            activities: metrics.contains(&Metric::Activities),
            latest: HashMap::new(),
            records: 0,
        }
    }

    /// The series this service last published for the subjects `owns` picks, as a board
    /// shows them: what the metrics topic held when it was read, committed by the previous
    /// owners, which a take-over serves while it builds its own state.
    pub fn series_of(&self, owns: impl Fn(&Subject) -> bool) -> Vec<SubjectSeries> {
        let mut by: HashMap<Subject, Vec<Series>> = HashMap::new();
        for (k, v) in &self.latest {
            let (Some(subject), Some((value, name))) = (subject_of_key(k), v) else {
                continue;
            };
            if !owns(&subject) {
                continue;
            }
            let name = (!name.is_empty()).then_some(name.as_str());
            if let Some(s) = series_of_key(k, *value, name) {
                by.entry(subject).or_default().push(s);
            }
        }
        by.into_iter()
            .map(|(subject, series)| SubjectSeries { subject, series })
            .collect()
    }

    /// What this service last published, by subject.
    pub fn into_differ(self) -> Differ {
        let mut differ = Differ::default();
        for (k, v) in self.latest {
            if let (Some(subject), Some((v, name))) = (subject_of_key(&k), v) {
                let name = (!name.is_empty()).then_some(name.as_str());
                differ.seed(subject, k, v, name);
            }
        }
        differ
    }
}

impl Follow for Board {
    fn record(&mut self, key: &str, payload: Option<&[u8]>) {
        if !metric_of_key(key).is_some_and(|n| self.names.contains(&n))
            || salespulse_aggregate::of_activities(key) != Some(self.activities)
        {
            return;
        }
        self.records += 1;
        // Records written as protobuf say so in their header; the rest follow the setting.
        let format = self.format;
        let value = payload.and_then(|p| {
            salespulse_publish::decode(p, format)
                .or_else(|| salespulse_publish::decode(p, other_format(format)))
        });
        self.latest
            .insert(key.to_owned(), value.map(|r| (r.value, r.name)));
    }
}

fn other_format(f: PublishFormat) -> PublishFormat {
    match f {
        PublishFormat::Json => PublishFormat::Protobuf,
        PublishFormat::Protobuf => PublishFormat::Json,
    }
}

/// The two topics a take-over reads, read up to some point before it.
pub(crate) struct Ahead {
    pub board: Followed<Board>,
    /// Only for a service that celebrates.
    pub announced: Option<Followed<Announced>>,
}

impl Ahead {
    /// Reads both topics side by side, from where `self` ended.
    pub async fn read_on(mut self, settings: &Settings) -> Result<Ahead, Error> {
        let Ahead { board, announced } = &mut self;
        let announced = async {
            match announced {
                Some(a) => a.read_on(settings).await,
                None => Ok(()),
            }
        };
        let (b, a) = tokio::join!(board.read_on(settings), announced);
        b.and(a)?;
        Ok(self)
    }

    /// The metrics topic read from its beginning, and the celebrations, if given, from where
    /// they were last read; `serve` is given the board as soon as its topic is read, while the
    /// celebrations (a larger topic) may still be.
    pub async fn read_serving(
        settings: &Settings,
        metrics: &'static [Metric],
        mut announced: Option<Followed<Announced>>,
        serve: impl std::ops::AsyncFnOnce(&Board),
    ) -> Result<Ahead, Error> {
        let mut board = Followed::new(&settings.topics.metrics, Board::new(settings, metrics));
        let board_read = async {
            board.read_on(settings).await?;
            serve(&board.kept).await;
            Ok::<_, Error>(())
        };
        let announced_read = async {
            match &mut announced {
                Some(a) => a.read_on(settings).await,
                None => Ok(()),
            }
        };
        let (b, a) = tokio::join!(board_read, announced_read);
        b.and(a)?;
        Ok(Ahead { board, announced })
    }

    /// The metrics topic read from its beginning, and the celebrations, if given, from where
    /// they were last read.
    pub async fn read(
        settings: &Settings,
        metrics: &'static [Metric],
        announced: Option<Followed<Announced>>,
    ) -> Result<Ahead, Error> {
        Ahead {
            board: Followed::new(&settings.topics.metrics, Board::new(settings, metrics)),
            announced,
        }
        .read_on(settings)
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rust_decimal::Decimal;
    use salespulse_aggregate::{series_key, Change, Scope, Window};

    use super::*;

    fn bookings(scope: Scope, id: &str, cents: i64, name: Option<&str>) -> Series {
        let id: Arc<str> = Arc::from(id);
        Series {
            scope,
            metric: Metric::Bookings,
            rep: (scope == Scope::Rep).then(|| id.clone()),
            team: match scope {
                Scope::Rep => Some(Arc::from("t1")),
                Scope::Team => Some(id.clone()),
                _ => None,
            },
            region: None,
            window: Some(Window::Qtd),
            extra: Default::default(),
            value: Decimal::new(cents, 2),
            name: name.map(Arc::from),
        }
    }

    /// A board read back serves what was last published for the subjects asked for: the
    /// newest value of each key, in either format, without tombstoned or other services' keys.
    #[test]
    fn a_board_read_back_serves_the_latest_series_of_the_owned_subjects() {
        let mut board = Board::new(&Settings::default(), &Metric::DEALS);
        let as_of = chrono::Utc::now();
        let mut publish = |s: &Series, format: PublishFormat| {
            let change = Change {
                key: series_key(s),
                series: Some(s.clone()),
            };
            let payload = salespulse_publish::encode(&change, format, as_of);
            board.record(&change.key, payload.as_deref());
        };
        let ada = bookings(Scope::Rep, "ada", 100, Some("Ada L."));
        publish(&ada, PublishFormat::Json);
        let ada = bookings(Scope::Rep, "ada", 250, Some("Ada L."));
        publish(&ada, PublishFormat::Protobuf);
        let team = bookings(Scope::Team, "t1", 250, None);
        publish(&team, PublishFormat::Json);
        let org = bookings(Scope::Org, "org", 250, None);
        publish(&org, PublishFormat::Json);
        // A rep gone since, and an activities series on the same topic.
        let bo = bookings(Scope::Rep, "bo", 5, None);
        publish(&bo, PublishFormat::Json);
        board.record(&series_key(&bo), None);
        board.record("rep/ada/activities/team=t1,kind=call/qtd", Some(b"{}"));

        let owned = |x: &Subject| !matches!(x, Subject::Team(_));
        let mut got: Vec<Series> = board
            .series_of(owned)
            .into_iter()
            .flat_map(|s| {
                assert!(owned(&s.subject));
                s.series
            })
            .collect();
        got.sort_by_key(series_key);
        let mut want = vec![ada, org];
        want.sort_by_key(series_key);
        assert_eq!(got, want);
    }
}
