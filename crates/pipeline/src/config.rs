//! Configuration: defaults, then a TOML file, then `SALESPULSE_*` environment variables, then
//! command-line flags. Unknown keys are rejected everywhere so that a typo is an error, not a
//! silently ignored setting.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use salespulse_aggregate::{Calendar, Metric, Window};
use salespulse_decode::{Contract, ContractConfig};
use salespulse_expose::Exposed;
use salespulse_publish::PublishFormat;
use serde::Deserialize;

use crate::Error;

/// Everything a service reads at start-up. Every section and key is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub topics: TopicSettings,
    pub contract: ContractConfig,
    pub calendar: CalendarSettings,
    pub publish: PublishSettings,
    pub expose: ExposeSettings,
    pub log: LogSettings,
    /// Settings of the deals service.
    pub deals: ServiceSettings,
    /// Settings of the activities service.
    pub activities: ServiceSettings,
    /// Settings of the targets service.
    pub targets: ServiceSettings,
    /// When the targets service raises drift alerts and celebrations.
    pub alerts: salespulse_targets::EventRules,
    /// How the targets service sets new hires' quotas.
    pub quotas: QuotaSettings,
    /// Regions: a level above teams.
    pub regions: RegionSettings,
}

/// Regions, an optional level above teams: region series for every family, the org their sum.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegionSettings {
    /// Region of each team (team id → region). A team not listed takes the region most of its
    /// reps have on the roster (`region`); without either, no region series at all.
    pub teams: BTreeMap<String, String>,
}

impl RegionSettings {
    pub fn team_list(&self) -> Vec<(String, String)> {
        self.teams
            .iter()
            .map(|(t, r)| (t.clone(), r.clone()))
            .collect()
    }
}

/// New hires' quotas (the targets service).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Percent of the full quota by month of tenure, counted from the roster's `hired_at`
    /// (e.g. `[25, 50, 75]`: 25 % in the first month, then 50 %, 75 %, then all of it).
    /// Empty: no ramp.
    pub ramp_percent: Vec<rust_decimal::Decimal>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`; the `KAFKA_BOOTSTRAP` variable or `--bootstrap` override it.
    pub bootstrap: String,
    /// Any librdkafka property, passed through to every client (e.g. `security.protocol`,
    /// `sasl.mechanisms`, `ssl.ca.location`).
    pub properties: BTreeMap<String, String>,
}

/// Whether a librdkafka property holds a secret that must never be printed or logged.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".key.pem") || k.contains("jaas")
}

impl std::fmt::Debug for KafkaSettings {
    // Written by hand so that `--print-config` and logs never show a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &props)
            .finish()
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap: "127.0.0.1:19092".into(),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSettings {
    pub deals: String,
    pub activities: String,
    pub roster: String,
    pub metrics: String,
    pub targets: String,
    /// Compacted topic of the compensation plans (`salespulse-targets import-plan`).
    pub plans: String,
    pub alerts: String,
    pub celebrations: String,
    pub deadletter: String,
    /// Compacted topic of the services' state snapshots.
    pub snapshots: String,
    /// Topic whose partitions ("slots") divide the series among the instances of a service.
    pub slots: String,
    /// Partitions of the slots topic when a service creates it: the most instances of one
    /// service that can share the work.
    pub slot_count: i32,
    /// Partitions of the topics a service creates when they are missing.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Create missing topics at start-up.
    pub create: bool,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            deals: "sales.deals".into(),
            activities: "sales.activities".into(),
            roster: "sales.roster".into(),
            metrics: "sales.metrics".into(),
            targets: "sales.targets".into(),
            plans: "sales.plans".into(),
            alerts: "sales.alerts".into(),
            celebrations: "sales.celebrations".into(),
            deadletter: "sales.deadletter".into(),
            snapshots: "salespulse.snapshots".into(),
            slots: "salespulse.slots".into(),
            slot_count: 12,
            partitions: 3,
            replication_factor: 1,
            create: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarSettings {
    /// IANA time zone of the to-date windows.
    pub time_zone: String,
    /// First month (1-12) of the fiscal year.
    pub fiscal_year_start_month: u32,
    /// Measure the elapsed share of a period in business days (Monday to Friday, minus
    /// holidays) rather than in calendar time.
    pub business_days: bool,
    /// Days that are not business days, as YYYY-MM-DD.
    pub holidays: Vec<chrono::NaiveDate>,
    /// Complete weeks (Monday to Sunday) a rep's consistency is measured over (2-104).
    pub consistency_weeks: u32,
}

impl Default for CalendarSettings {
    fn default() -> Self {
        CalendarSettings {
            time_zone: "UTC".into(),
            fiscal_year_start_month: 1,
            business_days: true,
            holidays: Vec::new(),
            consistency_weeks: salespulse_aggregate::CONSISTENCY_WEEKS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishSettings {
    /// Longest time between two ticks. A tick slides the windows and emits the changed series
    /// (coalesced: at most once per key per tick), so this is how late a number can be.
    pub interval_ms: u64,
    /// Shortest time between two ticks of the deals and activities services: they tick this
    /// often while a tick costs under half of it (a fifth once records keep the loop busy),
    /// and space ticks out up to `interval_ms` as the state grows. Equal to `interval_ms` (or
    /// above it): a fixed interval.
    pub min_interval_ms: u64,
    /// Time between two ticks of the deals and activities services while they are
    /// behind their input (catching up a backlog): intermediate values that would be out of
    /// date at once are not published. At or below `interval_ms`: ticks are never stretched.
    pub catch_up_interval_ms: u64,
    pub format: PublishFormat,
}

impl Default for PublishSettings {
    fn default() -> Self {
        PublishSettings {
            interval_ms: 1000,
            min_interval_ms: 100,
            catch_up_interval_ms: 5000,
            format: PublishFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposeSettings {
    /// Windows shown on `/metrics` (empty: all); in the targets service, by the series'
    /// `window` label.
    pub windows: Vec<String>,
    /// Metrics shown on `/metrics`, without scope, e.g. `bookings` (empty: all); in the
    /// targets service, by the series' `metric` label.
    pub metrics: Vec<String>,
    /// Most series one family may show on `/metrics`; further new series are refused and
    /// counted in `salespulse_series_refused_total` (0: no limit).
    pub max_series_per_family: usize,
}

impl Default for ExposeSettings {
    fn default() -> Self {
        ExposeSettings {
            windows: Vec::new(),
            metrics: Vec::new(),
            max_series_per_family: 250_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` (default) or `text`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "json".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Consumer group whose committed offsets mark what has been processed.
    pub group_id: String,
    /// `/readyz` is true once restored and no partition lags by more than this.
    #[serde(default = "default_ready_max_lag")]
    pub ready_max_lag: i64,
    /// Seconds between two snapshots of the state (one is also taken at shutdown); a start
    /// restores the newest one and replays only the input after it. 0: no snapshots, a start
    /// replays all retained input. With `divide_input`, each input partition's core has
    /// snapshots of its own, and a partition handed over is restored from them.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval_seconds: u64,
    /// Divided ingest: the instances of the group each consume only the input partitions
    /// Kafka assigns them, and sum each other's cells through the topic
    /// `salespulse.cells.v{layout}.<group_id>.<service>` (docs/design.md, "Divided ingest").
    /// Off: every instance reads all input and the instances divide only what they export.
    #[serde(default)]
    pub divide_input: bool,
}

fn default_snapshot_interval() -> u64 {
    60
}

fn default_ready_max_lag() -> i64 {
    1000
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            listen: ([127, 0, 0, 1], 9101).into(),
            group_id: "salespulse".into(),
            ready_max_lag: default_ready_max_lag(),
            snapshot_interval_seconds: default_snapshot_interval(),
            divide_input: false,
        }
    }
}

/// Each service's own address and consumer group when the configuration names none: the
/// services of one machine never collide.
pub const SERVICE_DEFAULTS: [(&str, &str, &str); 3] = [
    ("deals", "127.0.0.1:9101", "salespulse-deals"),
    ("activities", "127.0.0.1:9102", "salespulse-activities"),
    ("targets", "127.0.0.1:9103", "salespulse-targets"),
];

/// Defaults of the per-service sections, which differ only in port and group.
fn service_defaults() -> Figment {
    SERVICE_DEFAULTS
        .iter()
        .fold(Figment::new(), |fig, (service, listen, group)| {
            fig.merge(Serialized::default(&format!("{service}.listen"), *listen))
                .merge(Serialized::default(&format!("{service}.group_id"), *group))
        })
}

/// Flags shared by the services.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// TOML configuration file (see config/salespulse.toml for every key).
    #[arg(short, long, env = "SALESPULSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers; overrides the file and SALESPULSE_KAFKA__BOOTSTRAP.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Consumer group id.
    #[arg(long)]
    pub group_id: Option<String>,
    /// librdkafka property for every client, as key=value (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub property: Vec<String>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Settings {
    /// Loads the settings of `service` (`deals` or `activities`).
    pub fn load(args: &ServiceArgs, service: &str) -> Result<Settings, Error> {
        let mut fig = service_defaults();
        if let Some(path) = &args.config {
            if !path.exists() {
                return Err(Error::Config(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only sectioned variables (SALESPULSE_KAFKA__BOOTSTRAP) are settings; others such as
        // SALESPULSE_CONFIG belong to the flags or the scripts.
        fig = fig.merge(
            Env::prefixed("SALESPULSE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        if let Some(b) = &args.bootstrap {
            fig = fig.merge(Serialized::default("kafka.bootstrap", b));
        }
        if let Some(l) = &args.listen {
            fig = fig.merge(Serialized::default(
                &format!("{service}.listen"),
                l.to_string(),
            ));
        }
        if let Some(g) = &args.group_id {
            fig = fig.merge(Serialized::default(&format!("{service}.group_id"), g));
        }
        let mut s: Settings = fig.extract().map_err(|e| Error::Config(e.to_string()))?;
        // Secrets are better kept out of files and command lines (visible to other local users
        // in the process list): the SASL password may come from its own variable.
        if let Ok(pw) = std::env::var("SALESPULSE_SASL_PASSWORD") {
            s.kafka.properties.insert("sasl.password".into(), pw);
        }
        for p in &args.property {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "-X {p}: expected a librdkafka property as key=value"
                ))
            })?;
            s.kafka
                .properties
                .insert(k.trim().to_owned(), v.trim().to_owned());
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks what serde cannot: names, ranges and the contract.
    pub fn validate(&self) -> Result<(), Error> {
        self.contract()?;
        self.calendar()?;
        self.exposed()?;
        self.ramp()?;
        if self.publish.interval_ms == 0 || self.publish.min_interval_ms == 0 {
            return Err(Error::Config(
                "publish.interval_ms and publish.min_interval_ms must be positive".into(),
            ));
        }
        if self.topics.partitions < 1 || self.topics.replication_factor < 1 {
            return Err(Error::Config(
                "topics.partitions and topics.replication_factor must be at least 1".into(),
            ));
        }
        // One targets instance serves at a time (docs/guarantees.md): it divides nothing.
        if self.targets.divide_input {
            return Err(Error::Config(
                "targets.divide_input: the targets service does not divide its input (one \
                 instance serves, the others stand by); set it in [deals] or [activities]"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn contract(&self) -> Result<Contract, Error> {
        Contract::new(self.contract.clone()).map_err(|e| Error::Config(e.to_string()))
    }

    /// What a target record must agree with: the contract's kinds and currencies.
    pub fn target_rules(&self) -> Result<salespulse_targets::TargetRules, Error> {
        let contract = self.contract()?;
        Ok(salespulse_targets::TargetRules {
            kinds: contract.kinds().iter().cloned().collect(),
            reporting_currency: contract.reporting_currency.clone(),
            rates: self.contract.rates.clone(),
        })
    }

    /// The ramp schedule of new hires' quotas.
    pub fn ramp(&self) -> Result<salespulse_targets::Ramp, Error> {
        salespulse_targets::Ramp::new(self.quotas.ramp_percent.clone())
            .map_err(|e| Error::Config(format!("[quotas] {e}")))
    }

    pub fn calendar(&self) -> Result<Calendar, Error> {
        Calendar::new(
            &self.calendar.time_zone,
            self.calendar.fiscal_year_start_month,
        )
        .and_then(|c| c.with_consistency_weeks(self.calendar.consistency_weeks))
        .map_err(|e| Error::Config(format!("[calendar] {e}")))
    }

    pub fn exposed(&self) -> Result<Exposed, Error> {
        let windows = self
            .expose
            .windows
            .iter()
            .map(|w| {
                Window::from_label(w)
                    .ok_or_else(|| Error::Config(format!("expose.windows: unknown window {w:?}")))
            })
            .collect::<Result<HashSet<_>, _>>()?;
        let metrics = self
            .expose
            .metrics
            .iter()
            .map(|m| {
                Metric::from_name(m)
                    .ok_or_else(|| Error::Config(format!("expose.metrics: unknown metric {m:?}")))
            })
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(Exposed {
            windows,
            metrics,
            max_series_per_family: self.expose.max_series_per_family,
        })
    }

    pub fn service(&self, service: &str) -> &ServiceSettings {
        match service {
            "activities" => &self.activities,
            "targets" => &self.targets,
            _ => &self.deals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>) -> ServiceArgs {
        ServiceArgs {
            config,
            bootstrap: None,
            listen: None,
            group_id: None,
            property: vec!["security.protocol=PLAINTEXT".into()],
            print_config: false,
        }
    }

    #[test]
    fn shipped_config_loads() {
        let path = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/salespulse.toml"
        ));
        let s = Settings::load(&args(Some(path)), "activities").expect("shipped config is valid");
        assert_eq!(s.activities.listen.port(), 9102);
        assert_eq!(s.kafka.properties["security.protocol"], "PLAINTEXT");
    }

    #[test]
    fn without_a_file_every_service_has_its_own_address_and_group() {
        let (mut addresses, mut groups) = (HashSet::new(), HashSet::new());
        for (service, listen, group) in SERVICE_DEFAULTS {
            let s = Settings::load(&args(None), service).expect("defaults are valid");
            let own = s.service(service);
            assert_eq!(own.listen.to_string(), listen, "{service}");
            assert_eq!(own.group_id, group, "{service}");
            assert!(addresses.insert(own.listen), "{service} shares its address");
            assert!(
                groups.insert(own.group_id.clone()),
                "{service} shares its group"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbootstrapp = \"x\"\n").expect("write");
        let err = Settings::load(&args(Some(path)), "deals").expect_err("typo is an error");
        assert!(err.to_string().contains("bootstrapp"), "{err}");
    }

    #[test]
    fn a_ramp_above_100_percent_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[quotas]\nramp_percent = [50, 150]\n").expect("write");
        let err = Settings::load(&args(Some(path)), "targets").expect_err("invalid");
        assert!(err.to_string().contains("ramp_percent[1] = 150"), "{err}");
    }

    #[test]
    fn dividing_the_targets_input_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        let toml =
            "[targets]\nlisten = \"127.0.0.1:9103\"\ngroup_id = \"t\"\ndivide_input = true\n";
        std::fs::write(&path, toml).expect("write");
        let err = Settings::load(&args(Some(path)), "targets").expect_err("invalid");
        assert!(err.to_string().contains("targets.divide_input"), "{err}");
    }

    #[test]
    fn bad_time_zone_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[calendar]\ntime_zone = \"Mars/Base\"\n").expect("write");
        let err = Settings::load(&args(Some(path)), "deals").expect_err("invalid");
        assert!(err.to_string().contains("Mars/Base"), "{err}");
    }
}
