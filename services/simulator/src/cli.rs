//! The simulator's command line: every flag, checked as it is parsed, and what the run is
//! made of that follows from them.

use chrono::{DateTime, Utc};
use clap::Parser;

use crate::drive::Plan;
use crate::encode::Format;
use crate::generate::Config;
use crate::produce::TopicSpec;
use crate::rhythm::Backfill;

const DAY_MS: i64 = 24 * 3_600_000;

/// Simulated sales org producing deals, activities and roster changes to Kafka.
///
/// The org (teams, reps) and the sequence of records follow from --seed and the other flags
/// alone: two runs with the same flags produce the same records, apart from the wall-clock
/// times of live mode. A backfill with a fixed --start is reproducible byte for byte.
///
/// The roster goes out first, then the open pipeline the org starts with (about 40 deals a rep,
/// at most 20,000, opened over the 90 days before the first record, with the records of their
/// stages so far), then the backfill (if any) as fast as possible, then live records at --rate until --records
/// is reached or SIGINT/SIGTERM arrives. On exit the producer is flushed (at most
/// --flush-seconds) and a summary is logged. A second signal exits at once.
///
/// Deals stay days in a stage, some for weeks (stalled), in a backfill as in the pipeline the
/// org starts with; live records also move deals ahead of their plan, so that stages change
/// every few seconds.
#[derive(Debug, Parser)]
#[command(name = "salespulse-simulator", version, verbatim_doc_comment)]
pub struct Args {
    /// Seed of the simulation. Runs with the same seed reuse the same deal and event ids.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Number of teams: team-emea, team-amer, team-apac, team-nordics, team-dach, ...
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub teams: u32,

    /// Number of reps (rep-001, rep-002, ...), assigned to the teams round-robin.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub reps: u32,

    /// Live records per second; 0 produces as fast as possible.
    #[arg(long, default_value_t = 50.0, value_parser = non_negative)]
    pub rate: f64,

    /// Let the live rate follow the working-day rhythm (UTC): --rate applies in weekday office
    /// hours, with less in the evening and little at night and at weekends.
    #[arg(long)]
    pub live_rhythm: bool,

    /// Days of history to produce first, as fast as possible, ending at --start; live mode
    /// follows unless --records is reached.
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    pub backfill_days: u32,

    /// Average records per simulated hour in the backfill. The working-day rhythm shapes
    /// them: most fall in weekday office hours, few at night and at weekends.
    #[arg(long, default_value_t = 600.0, value_name = "PER_HOUR", value_parser = non_negative)]
    pub backfill_rate: f64,

    /// End of the backfill, RFC 3339 (e.g. 2026-11-27T10:00:00Z); default now. Fixing it
    /// makes the backfill's times reproducible. Must not be in the future.
    #[arg(long, value_name = "RFC3339", value_parser = parse_start)]
    pub start: Option<DateTime<Utc>>,

    /// Stop after this many records in total, roster included; 0 runs until SIGINT/SIGTERM.
    #[arg(long, default_value_t = 0)]
    pub records: u64,

    /// How long the exit waits for the broker to acknowledge what is still in flight (a
    /// broker that is restarting may need longer); records still undelivered then are an
    /// error.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub flush_seconds: u64,

    /// Encoding of record values, announced in the `content-type` header
    /// (application/json or application/x-protobuf).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Chance per record of a roster change: a rep moves team, or (rarely) leaves or returns.
    #[arg(long, default_value_t = 0.002, value_name = "SHARE", value_parser = share)]
    pub roster_move_share: f64,

    /// Share of records that repeat an earlier record exactly, event_id included.
    #[arg(long, default_value_t = 0.01, value_name = "SHARE", value_parser = share)]
    pub duplicate_share: f64,

    /// Share of records that re-send an older state of a deal (new event_id) after a newer one.
    #[arg(long, default_value_t = 0.005, value_name = "SHARE", value_parser = share)]
    pub stale_share: f64,

    /// Share of records (activities, new deals) whose occurred_at lies hours to days in the
    /// past, never more than 30 days.
    #[arg(long, default_value_t = 0.01, value_name = "SHARE", value_parser = share)]
    pub late_share: f64,

    /// Share of records that break the contract: invalid JSON/protobuf, a missing field, a
    /// negative amount, an unknown stage, kind, currency or forecast category, a far-future
    /// time or an empty id.
    /// Only deals and activities get them; the compacted roster would keep them for good.
    #[arg(long, default_value_t = 0.002, value_name = "SHARE", value_parser = share)]
    pub malformed_share: f64,

    /// Topic of deal records (key deal_id).
    #[arg(long, default_value = "sales.deals", value_name = "TOPIC")]
    pub deals_topic: String,

    /// Topic of activity records (key rep_id).
    #[arg(long, default_value = "sales.activities", value_name = "TOPIC")]
    pub activities_topic: String,

    /// Compacted topic of roster records (key rep_id).
    #[arg(long, default_value = "sales.roster", value_name = "TOPIC")]
    pub roster_topic: String,

    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:19092")]
    pub bootstrap: String,

    /// librdkafka producer property, repeatable (e.g. -X security.protocol=SASL_SSL
    /// -X sasl.mechanism=PLAIN). Overrides the defaults enable.idempotence=true, linger.ms=5 and
    /// compression.type=lz4.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = property)]
    pub property: Vec<(String, String)>,

    /// Do not create missing topics (deals and activities with 3 partitions, the roster
    /// compacted with 1); for clusters where topics are managed elsewhere.
    #[arg(long)]
    pub no_create_topics: bool,

    /// Replication factor of the topics the simulator creates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=32))]
    pub replication_factor: i32,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a non-negative number, got {s:?}")),
    }
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a share between 0 and 1, got {s:?}")),
    }
}

fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl Args {
    /// The org and the record mix.
    pub fn config(&self) -> Config {
        Config {
            seed: self.seed,
            teams: self.teams as usize,
            reps: self.reps as usize,
            format: self.format,
            roster_move_share: self.roster_move_share,
            duplicate_share: self.duplicate_share,
            stale_share: self.stale_share,
            late_share: self.late_share,
            malformed_share: self.malformed_share,
        }
    }

    /// What the generator thread does: a backfill that ends at `end`, then live records.
    pub fn plan(&self, end: DateTime<Utc>) -> Plan {
        let backfill = (self.backfill_days > 0).then(|| {
            let end_ms = end.timestamp_millis();
            let start_ms = end_ms - i64::from(self.backfill_days) * DAY_MS;
            Backfill::new(start_ms, end_ms, self.backfill_rate)
        });
        Plan {
            backfill,
            rate: self.rate,
            live_rhythm: self.live_rhythm,
            limit: if self.records == 0 {
                u64::MAX
            } else {
                self.records
            },
        }
    }

    /// The topics written, in the order [`crate::produce::Sink`] takes them.
    pub fn topics(&self) -> [String; 3] {
        [
            self.deals_topic.clone(),
            self.activities_topic.clone(),
            self.roster_topic.clone(),
        ]
    }

    /// The topics to create when they do not exist yet.
    pub fn topic_specs(&self) -> [TopicSpec<'_>; 3] {
        [
            TopicSpec {
                name: &self.deals_topic,
                partitions: 3,
                compacted: false,
            },
            TopicSpec {
                name: &self.activities_topic,
                partitions: 3,
                compacted: false,
            },
            TopicSpec {
                name: &self.roster_topic,
                partitions: 1,
                compacted: true,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_documents_every_flag() {
        Args::command().debug_assert();
        for arg in Args::command().get_arguments() {
            assert!(arg.get_help().is_some(), "{} has no help", arg.get_id());
        }
    }

    #[test]
    fn properties_parse() {
        assert_eq!(
            property("sasl.password=a=b"),
            Ok(("sasl.password".into(), "a=b".into()))
        );
        assert!(property("linger.ms").is_err());
        assert!(share("1.5").is_err());
        assert!(non_negative("-1").is_err());
    }
}
