//! Shared helpers of the end-to-end tests: a real broker, the real service binaries, a real
//! Prometheus, and unique topic names per test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Fails with a clear message when no broker answers.
pub fn require_broker() {
    let addr = bootstrap();
    let first = addr.split(',').next().unwrap_or_default().to_owned();
    if std::net::TcpStream::connect_timeout(
        &first.parse().expect("KAFKA_BOOTSTRAP is host:port"),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("no Kafka broker at {addr}: start one with scripts/kafka.sh start (scripts/test.sh does)");
    }
}

/// Topic names unique to one test run.
#[derive(Debug, Clone)]
pub struct Topics {
    pub deals: String,
    pub activities: String,
    pub roster: String,
    pub metrics: String,
    pub targets: String,
    pub plans: String,
    pub alerts: String,
    pub celebrations: String,
    pub deadletter: String,
    pub snapshots: String,
    pub suffix: String,
}

impl Topics {
    /// The environment that points a service at these topics.
    pub fn env(&self) -> [(&'static str, &str); 10] {
        [
            ("SALESPULSE_TOPICS__DEALS", &self.deals),
            ("SALESPULSE_TOPICS__ACTIVITIES", &self.activities),
            ("SALESPULSE_TOPICS__ROSTER", &self.roster),
            ("SALESPULSE_TOPICS__METRICS", &self.metrics),
            ("SALESPULSE_TOPICS__DEADLETTER", &self.deadletter),
            ("SALESPULSE_TOPICS__SNAPSHOTS", &self.snapshots),
            ("SALESPULSE_TOPICS__TARGETS", &self.targets),
            ("SALESPULSE_TOPICS__PLANS", &self.plans),
            ("SALESPULSE_TOPICS__ALERTS", &self.alerts),
            ("SALESPULSE_TOPICS__CELEBRATIONS", &self.celebrations),
        ]
    }

    /// The same input topics, with outputs of their own: for a clean reference run.
    pub fn clean(&self) -> Topics {
        Topics {
            metrics: format!("{}.clean", self.metrics),
            celebrations: format!("{}.clean", self.celebrations),
            alerts: format!("{}.clean", self.alerts),
            deadletter: format!("{}.clean", self.deadletter),
            snapshots: format!("{}.clean", self.snapshots),
            ..self.clone()
        }
    }

    pub fn unique(name: &str) -> Topics {
        let suffix = format!(
            "{name}-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        Topics {
            deals: format!("t.{suffix}.deals"),
            activities: format!("t.{suffix}.activities"),
            roster: format!("t.{suffix}.roster"),
            metrics: format!("t.{suffix}.metrics"),
            targets: format!("t.{suffix}.targets"),
            plans: format!("t.{suffix}.plans"),
            alerts: format!("t.{suffix}.alerts"),
            celebrations: format!("t.{suffix}.celebrations"),
            deadletter: format!("t.{suffix}.deadletter"),
            snapshots: format!("t.{suffix}.snapshots"),
            suffix,
        }
    }
}

/// A port free on 127.0.0.1 for a service or Prometheus to listen on.
///
/// Taken below the kernel's ephemeral range (32768 and up): a port the kernel picked for us
/// is also one it may hand to an outgoing Kafka connection before the service binds it.
/// Never the same port twice in one test process.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_700;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let start = seed % (HIGH - LOW);
    (0..HIGH - LOW)
        .map(|i| (LOW + (start + i * 7919) % (HIGH - LOW)) as u16)
        .find(|p| !given.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .inspect(|p| given.push(*p))
        .expect("a free port")
}

static BUILD: Once = Once::new();

/// Path of a project binary, built once per test process.
///
/// The build is the one `scripts/test.sh` runs before the tests (every binary of the
/// workspace, features resolved for the whole workspace), so there it finds nothing to do; a
/// build of single packages would resolve features differently and rebuild.
pub fn bin(name: &str) -> PathBuf {
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "--workspace", "--bins"])
            .current_dir(root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the services failed");
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target.join("debug").join(name)
}

static SERVICE_ENV: std::sync::Mutex<Vec<(String, String, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Sets an environment variable for every later start of service `name` in this test process.
pub fn set_service_env(name: &str, key: &str, value: &str) {
    if let Ok(mut m) = SERVICE_ENV.lock() {
        m.push((name.to_owned(), key.to_owned(), value.to_owned()));
    }
}

/// The simulator writing to the broker of `bootstrap()` and to `topics`, output discarded; the
/// caller adds the seed, rate and size.
pub fn simulator(topics: &Topics) -> Command {
    let mut cmd = Command::new(bin("salespulse-simulator"));
    cmd.args(["--bootstrap", &bootstrap()])
        .args(["--deals-topic", &topics.deals])
        .args(["--activities-topic", &topics.activities])
        .args(["--roster-topic", &topics.roster])
        .stdout(Stdio::null())
        .stderr(service_log(&format!("{}-simulator", topics.suffix), 0));
    cmd
}

/// A project binary started with the project's configuration file.
pub fn with_config(binary: &str) -> Command {
    let mut cmd = Command::new(bin(binary));
    cmd.arg("--config")
        .arg(root().join("config/salespulse.toml"));
    cmd
}

/// `salespulse-targets import <csv>` onto the test's targets topic, with the settings given
/// to the targets service by [`set_service_env`].
pub fn targets_import(topics: &Topics, csv: &Path) -> Command {
    let mut cmd = with_config("salespulse-targets");
    cmd.args(["--bootstrap", &bootstrap()])
        .env("SALESPULSE_TOPICS__TARGETS", &topics.targets)
        .env("SALESPULSE_LOG__FORMAT", "text")
        .envs(extra_env("targets"))
        .arg("import")
        .arg(csv);
    cmd
}

/// `salespulse-targets import-plan <csv>` onto the test's plans topic, with the settings given
/// to the targets service by [`set_service_env`].
pub fn plans_import(topics: &Topics, csv: &Path) -> Command {
    let mut cmd = with_config("salespulse-targets");
    cmd.args(["--bootstrap", &bootstrap()])
        .env("SALESPULSE_TOPICS__PLANS", &topics.plans)
        .env("SALESPULSE_LOG__FORMAT", "text")
        .envs(extra_env("targets"))
        .arg("import-plan")
        .arg(csv);
    cmd
}

/// Waits for a simulator started from [`simulator`] and fails, with its log, unless it
/// succeeded.
pub fn simulator_done(sim: &mut Child, topics: &Topics) {
    let status = sim.wait().expect("simulator ends");
    assert!(
        status.success(),
        "the simulator exited with {status}:\n{}",
        log_tail(&std::env::temp_dir().join(format!("{}-simulator.log", topics.suffix)))
    );
}

/// The last 20 lines of a log file.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // A broker that is down is retried again and again; those lines would hide the rest.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("Connection refused"))
        .collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The log file `<temp>/<stem>.log`, opened for appending after a line naming the start.
fn service_log(stem: &str, port: u16) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("{stem}.log"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("log file {}: {e}", path.display()));
    let _ = writeln!(f, "=== start (port {port}) ===");
    f
}

/// Forgets the variables set for later starts of service `name`.
pub fn clear_service_env(name: &str) {
    if let Ok(mut m) = SERVICE_ENV.lock() {
        m.retain(|(n, _, _)| n != name);
    }
}

fn extra_env(name: &str) -> Vec<(String, String)> {
    SERVICE_ENV
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(n, _, _)| n == name)
                .map(|(_, k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A running service process, killed on drop.
#[derive(Debug)]
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub name: String,
    /// Where its standard error goes (appended).
    pub log: PathBuf,
}

impl Service {
    pub fn start(name: &str, topics: &Topics, port: u16, group: &str) -> Service {
        // One log per instance, appended to across restarts.
        let stem = format!("{}-{name}-{port}", topics.suffix);
        let log = service_log(&stem, port);
        let child = with_config(&format!("salespulse-{name}"))
            .args(["--bootstrap", &bootstrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--group-id", group])
            .envs(topics.env())
            .env("SALESPULSE_LOG__FORMAT", "text")
            .envs(extra_env(name))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("service starts");
        Service {
            child,
            port,
            name: name.to_owned(),
            log: std::env::temp_dir().join(format!("{stem}.log")),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        match reqwest::get(self.url("/readyz")).await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited early with {status}:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            if let Ok(r) = reqwest::get(self.url("/readyz")).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "{} not ready within {within:?}:\n{}",
            self.name,
            log_tail(&self.log)
        );
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        panic!("{} did not stop within 20 s of SIGTERM", self.name);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// Produces `value` as a JSON record under `key` and waits for the broker's acknowledgement.
pub async fn produce_json(p: &FutureProducer, topic: &str, key: &str, value: &serde_json::Value) {
    let payload = serde_json::to_vec(value).expect("json");
    produce(p, topic, Some(key), Some(&payload)).await;
}

/// Produces one record and waits for the broker's acknowledgement.
pub async fn produce(p: &FutureProducer, topic: &str, key: Option<&str>, value: Option<&[u8]>) {
    let mut rec: FutureRecord<'_, str, [u8]> =
        FutureRecord::to(topic).headers(OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        }));
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    p.send(rec, Duration::from_secs(10))
        .await
        .expect("delivered");
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Reads what is committed of a whole topic, from the beginning up to its current end, as a
/// subscriber should (`read_committed`).
pub fn read_topic(topic: &str) -> Vec<Consumed> {
    read_topic_as(topic, "read_committed")
}

/// Reads a whole topic with the given `isolation.level`: `read_uncommitted` also returns
/// records of aborted transactions.
pub fn read_topic_as(topic: &str, isolation: &str) -> Vec<Consumed> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "salespulse-e2e-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        // The last offset of a transactional partition is a marker, never delivered.
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let high_watermarks: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    // The reader's own end, measured on a connection of its own (on the reader's, the query
    // waits behind its fetch).
    let stable: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("partition");
        // The high watermark: transactions open now are waited for.
        let (lo, hi) = high_watermarks
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .expect("watermarks");
        if hi > lo {
            ends.insert(*p, hi);
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    // Partitions read again from their next record once their last stable offset was past
    // the end: an end reached while a transaction was open lies before what commits after.
    let mut settled = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, e)| pos.get(p).copied().unwrap_or(0) < *e)
    {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        let m = match c.poll(Duration::from_millis(500)) {
            None => continue,
            // Done once the last stable offset (this reader's end) passed the high watermark.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                if let Some(e) = ends.get(&p) {
                    if settled.contains(&p) {
                        pos.insert(p, *e);
                        continue;
                    }
                    let end = stable.fetch_watermarks(topic, p, Duration::from_secs(10));
                    if matches!(end, Ok((_, s)) if s >= *e) {
                        let next = pos
                            .get(&p)
                            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                        c.seek(topic, p, next, Duration::from_secs(10))
                            .expect("seek");
                        settled.insert(p);
                    }
                }
                continue;
            }
            Some(m) => m.expect("message"),
        };
        pos.insert(m.partition(), m.offset() + 1);
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Consumed {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}

/// The keys of the celebrations on `topic`; panics on one announced twice.
pub fn celebrations_once(topic: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in read_topic(topic) {
        let key = String::from_utf8(r.key.unwrap_or_default()).expect("celebration key");
        assert!(
            out.insert(key.clone()),
            "{key} was announced twice on {topic}"
        );
    }
    out
}

/// The celebrations on `topic`, each once and exactly those on `clean` (a clean run's);
/// returns how many there are.
pub fn same_celebrations_once(topic: &str, clean: &str) -> usize {
    let got = celebrations_once(topic);
    let want = celebrations_once(clean);
    assert_eq!(got, want, "the same celebrations as the clean run");
    got.len()
}

/// The dead letters on `topic` of records from the `sources` topics, by source position
/// (topic, partition, offset) with their reason; panics on a record dead-lettered twice.
pub fn dead_letters_once(topic: &str, sources: &[&str]) -> BTreeMap<(String, i32, i64), String> {
    let mut out = BTreeMap::new();
    for r in read_topic(topic) {
        let h = |k: &str| r.headers.get(k).cloned().unwrap_or_default();
        if !sources.contains(&h("source.topic").as_str()) {
            continue;
        }
        let at = (
            h("source.topic"),
            h("source.partition").parse().expect("source.partition"),
            h("source.offset").parse().expect("source.offset"),
        );
        assert!(
            out.insert(at.clone(), h("reason")).is_none(),
            "the record at {at:?} was dead-lettered twice on {topic}"
        );
    }
    out
}

/// Waits (bounded) until the dead letters of the `sources` records on `topic` are those on
/// `clean` (a clean run's), each once; returns how many there are.
pub fn wait_same_dead_letters(
    topic: &str,
    clean: &str,
    sources: &[&str],
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let got = dead_letters_once(topic, sources);
        let want = dead_letters_once(clean, sources);
        if got == want {
            return got.len();
        }
        // With their reasons: what a record was rejected for tells which path rejected it.
        type Letters = BTreeMap<(String, i32, i64), String>;
        fn only<'a>(a: &'a Letters, b: &Letters) -> Vec<(&'a (String, i32, i64), &'a String)> {
            a.iter()
                .filter(|(k, _)| !b.contains_key(*k))
                .take(10)
                .collect()
        }
        let other_reason: Vec<_> = got
            .iter()
            .filter(|(k, r)| want.get(*k).is_some_and(|w| w != *r))
            .take(10)
            .collect();
        assert!(
            Instant::now() < deadline,
            "{} dead letters, the clean run has {}: only here {:?}, only in the clean run {:?}, \
             another reason here {other_reason:?}",
            got.len(),
            want.len(),
            only(&got, &want),
            only(&want, &got),
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Records of `topic` an instance consumed live: its `salespulse_events_total` over outcomes.
pub fn consumed(text: &str, topic: &str) -> f64 {
    let label = format!("topic=\"{topic}\"");
    parse_metrics(text)
        .into_iter()
        .filter(|(k, _)| k.starts_with("salespulse_events_total{") && k.contains(&label))
        .map(|(_, v)| v)
        .sum()
}

/// Parses exposition text into `family{sorted labels}` → value, skipping comments. Label
/// values must not contain `",` (the tests' ids do not).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(f64::NAN);
        let key = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.trim_end_matches('}');
                let mut labels: Vec<&str> =
                    body.split("\",").map(|l| l.trim_end_matches('"')).collect();
                labels.sort_unstable();
                let labels: Vec<String> = labels.iter().map(|l| format!("{l}\"")).collect();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_owned(),
        };
        out.insert(key, v);
    }
    out
}

/// The key `parse_metrics` gives a series.
pub fn metric_key(family: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.sort_unstable();
    if l.is_empty() {
        return family.to_owned();
    }
    format!("{family}{{{}}}", l.join(","))
}

/// Runs `promtool check metrics` on exposition text; returns its complaints (empty when clean).
pub fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool runs");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && s.is_empty() {
        s = format!("promtool exited with {}", out.status);
    }
    s
}

/// A Prometheus server scraping the given ports every second, stopped on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: PathBuf,
}

impl Prometheus {
    pub fn start(targets: &[u16], name: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("prom-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: salespulse\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// Instant query; returns `(labels, value)` per series.
    pub async fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(r) = reqwest::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let Ok(v) = r.json::<serde_json::Value>().await else {
            return Vec::new();
        };
        v["data"]["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| {
                                        (k.clone(), v.as_str().unwrap_or_default().to_owned())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        let value = s["value"][1]
                            .as_str()
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(f64::NAN);
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `group` has committed every record of `topic`.
fn tpl_of(topic: &str, parts: &[i32]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(topic, *p);
    }
    tpl
}

pub fn wait_committed(group: &str, topic: &str, within: Duration) {
    let client = || -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", group)
            .create()
            .expect("consumer")
    };
    let mut c = client();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let deadline = Instant::now() + within;
    loop {
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(topic, *p);
        }
        // Offsets committed in a transaction still open (an instance killed mid-tick) are
        // read only once it is decided: until then the request times out, and is sent again,
        // by a new client (after a broker restart a client's coordinator requests can stay
        // unsent).
        let committed = c.committed_offsets(tpl, Duration::from_secs(5));
        if committed.is_err() {
            c = client();
        }
        let done = committed.is_ok_and(|committed| {
            parts.iter().all(|p| {
                let Ok((_, high)) = c.fetch_watermarks(topic, *p, Duration::from_secs(5)) else {
                    return false;
                };
                match committed.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o >= high,
                    _ => high == 0,
                }
            })
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} did not commit all of {topic} within {within:?}: committed {:?}, ends {:?}",
            c.committed_offsets(tpl_of(topic, &parts), Duration::from_secs(5))
                .map(|t| t.elements().iter().map(|e| e.offset()).collect::<Vec<_>>()),
            parts
                .iter()
                .map(|p| c
                    .fetch_watermarks(topic, *p, Duration::from_secs(5))
                    .map(|w| w.1))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Commits for group `to` the offsets group `from` has committed on `topic`.
pub fn copy_committed(from: &str, to: &str, topic: &str) {
    let client = |group: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    };
    let (src, dst) = (client(from), client(to));
    let md = src
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = src
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    dst.commit(&committed, rdkafka::consumer::CommitMode::Sync)
        .expect("commit for the other group");
}

/// A record to produce: key, value (`None`: a tombstone), content type.
pub type RawRecord<'a> = (Option<Vec<u8>>, Option<Vec<u8>>, &'a str);

/// Produces many records quickly (batched), then waits for all to be acknowledged.
pub fn produce_many(topic: &str, records: &[RawRecord<'_>]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "20")
        .set("message.max.bytes", "2000000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .expect("producer");
    for (k, v, ct) in records {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(*ct),
        });
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(k) = k {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = v {
            rec = rec.payload(v.as_slice());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    assert!(Instant::now() < deadline, "producer queue stayed full");
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120))
        .expect("all records acknowledged");
}

/// The business series (rep, team, org) of a `/metrics` text.
pub fn business(text: &str) -> BTreeMap<String, f64> {
    parse_metrics(text)
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("sales_rep_")
                || k.starts_with("sales_team_")
                || k.starts_with("sales_region_")
                || k.starts_with("sales_org_")
        })
        .collect()
}

/// Latest value per key of a metrics topic, and how many records repeated the previous record
/// of their key (the same value, and for a rep the same name: a renamed rep's records are sent
/// again with the new name).
pub fn board_of(topic: &str) -> (BTreeMap<String, String>, usize, usize) {
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let mut last: HashMap<String, Option<(String, String)>> = HashMap::new();
    let mut repeats = 0;
    let mut n = 0;
    for r in read_topic(topic) {
        n += 1;
        let key = String::from_utf8(r.key.unwrap_or_default()).expect("utf-8 key");
        let record = r.value.map(|v| {
            let j: serde_json::Value = serde_json::from_slice(&v).expect("json");
            (
                j["value"].as_str().unwrap_or_default().to_owned(),
                j["name"].as_str().unwrap_or_default().to_owned(),
            )
        });
        if last.get(&key) == Some(&record) {
            repeats += 1;
        }
        let value = record.clone().map(|r| r.0);
        last.insert(key.clone(), record);
        match value {
            Some(v) => {
                latest.insert(key, v);
            }
            None => {
                latest.remove(&key);
            }
        }
    }
    (latest, repeats, n)
}

/// The keys whose latest values differ between two topics read with [`board_of`], the first
/// ten, one line each.
pub fn topic_diffs(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> String {
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    keys.into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .take(10)
        .map(|k| format!("\n  {k}: {:?}, expected {:?}", got.get(k), want.get(k)))
        .collect()
}

/// The last records of `keys` on a metrics topic, each marked committed or not (in an aborted
/// or open transaction): whether a value missing from the committed topic was never written,
/// written and aborted, or overwritten afterwards.
pub fn key_stories(topic: &str, keys: &[&String]) -> String {
    let committed: BTreeSet<(i32, i64)> = read_topic(topic)
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    let mut out = String::new();
    let all = read_topic_as(topic, "read_uncommitted");
    for key in keys {
        let records: Vec<&Consumed> = all
            .iter()
            .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
            .collect();
        out.push_str(&format!("\n  {key}: {} records", records.len()));
        for r in &records[records.len().saturating_sub(6)..] {
            let value = r.value.as_deref().map_or("tombstone".into(), |v| {
                serde_json::from_slice::<serde_json::Value>(v)
                    .map(|j| j["value"].to_string())
                    .unwrap_or_else(|_| "?".into())
            });
            let state = match committed.contains(&(r.partition, r.offset)) {
                true => "committed",
                false => "not committed",
            };
            out.push_str(&format!(
                "\n    p{}@{} {value} {state}",
                r.partition, r.offset
            ));
        }
    }
    out
}

/// The lines of a service log that tell its history in a group: assignments, take-overs,
/// transactions aborted, fencing, stalls (the last `n`).
pub fn log_events(log: &Path, n: usize) -> String {
    const EVENTS: [&str; 14] = [
        "assigned partitions",
        "assigned slots",
        "took over the series",
        "roster loaded",
        "leading:",
        "gave up",
        "built from the topics",
        "transaction was aborted",
        "fenced",
        "failed; aborting",
        "taking over failed",
        "replaced it",
        "=== start",
        "shutting down",
    ];
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| EVENTS.iter().any(|e| l.contains(e)))
        .map(|l| {
            let plain = without_colours(l);
            plain.chars().take(260).collect()
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The text of a log without its terminal colour codes (`ESC [ ... m`).
pub fn without_colours(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits (bounded by `within`) until the union of the instances' business series equals the
/// clean instance's; panics if a series is on two instances, or at the deadline with the
/// differences and each instance's readiness, series count and log tail. Returns the series
/// and how long they took to agree.
pub async fn wait_union_equal(
    instances: &[&Service],
    clean: &Service,
    what: &str,
    within: Duration,
) -> (usize, Duration) {
    let began = Instant::now();
    loop {
        let mut union: BTreeMap<String, f64> = BTreeMap::new();
        for s in instances {
            for (k, v) in business(&s.metrics().await) {
                assert!(
                    union.insert(k.clone(), v).is_none(),
                    "{k} is exported by two instances of {}",
                    s.name
                );
            }
        }
        let diffs = board_diffs(&union, &business(&clean.metrics().await));
        if diffs.is_empty() && !union.is_empty() {
            return (union.len(), began.elapsed());
        }
        if began.elapsed() >= within {
            let mut states = String::new();
            for s in instances {
                states.push_str(&instance_report(s).await);
            }
            panic!(
                "{what}: {} differences from the clean run after {within:?}:\n{}\nthe instances:{states}",
                diffs.len(),
                diffs.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The business series that differ between two boards, one line each.
pub fn board_diffs(got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) -> Vec<String> {
    got.iter()
        .filter(|(k, v)| want.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v}, expected {:?}", want.get(k)))
        .chain(
            want.keys()
                .filter(|k| !got.contains_key(*k))
                .map(|k| format!("{k}: missing")),
        )
        .collect()
}

/// The business series of several services together.
pub async fn business_of(services: &[&Service]) -> BTreeMap<String, f64> {
    business_once(services).await.0
}

/// The union of the services' business series, and the series that more than one of them
/// exports: a series belongs to one instance, and a second one showing it (a stale owner)
/// would hide what the first shows.
async fn business_once(services: &[&Service]) -> (BTreeMap<String, f64>, Vec<String>) {
    let mut all = BTreeMap::new();
    let mut twice = Vec::new();
    for s in services {
        for (k, v) in business(&s.metrics().await) {
            if all.insert(k.clone(), v).is_some() {
                twice.push(format!("{k} (again on {} :{})", s.name, s.port));
            }
        }
    }
    (all, twice)
}

/// Waits (bounded) until the services `got` show the business series of the services `want`,
/// each series on one instance only. Windows slide with the clock, so both are read at nearly
/// the same instant, again until they agree. Panics with the differences left; returns the
/// number of series.
pub async fn assert_same_boards(got: &[&Service], want: &[&Service], what: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ((a, twice), b) = (business_once(got).await, business_of(want).await);
        let diffs = board_diffs(&a, &b);
        if diffs.is_empty() && twice.is_empty() {
            return a.len();
        }
        if Instant::now() >= deadline {
            let mut instances = String::new();
            for s in got.iter().chain(want) {
                instances.push_str(&instance_report(s).await);
            }
            panic!(
                "{what}: {} differences ({} series against {}):\n{}\nseries on two instances: {:?}\nreps whose teams differ (got / want): {:?}\nthe instances (got, then want):{instances}",
                diffs.len(),
                a.len(),
                b.len(),
                diffs
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n"),
                &twice[..twice.len().min(10)],
                teams_differ(&a, &b)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What an instance says of itself, for a failure to be explained by: its readiness, the
/// operational series that tell what it read and holds (leadership, slots, records by outcome,
/// lag, state, replaced consumers, rebalances, transactions) and the history in its log.
async fn instance_report(s: &Service) -> String {
    const OPS: [&str; 10] = [
        "salespulse_leader",
        "salespulse_owned_slots",
        "salespulse_board_series",
        "salespulse_events_total",
        "salespulse_consumer_lag",
        "salespulse_state_entries",
        "salespulse_consumers_replaced_total",
        "salespulse_rebalances_total",
        "salespulse_transactions_total",
        "salespulse_restore_replayed_records",
    ];
    let text = s.metrics().await;
    let ops: Vec<&str> = text
        .lines()
        .filter(|l| OPS.iter().any(|m| l.starts_with(m)))
        .collect();
    format!(
        "\n--- {} :{} (ready {}) {}:\n{}\n{}",
        s.name,
        s.port,
        s.is_ready().await,
        s.log.display(),
        ops.join("\n"),
        log_events(&s.log, 25)
    )
}

/// Reps whose series sit under other teams in one board than in the other.
fn teams_differ(
    a: &BTreeMap<String, f64>,
    b: &BTreeMap<String, f64>,
) -> Vec<(String, Vec<String>, Vec<String>)> {
    fn teams(
        board: &BTreeMap<String, f64>,
    ) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        let label = |k: &str, name: &str| {
            let start = k.find(&format!("{name}=\""))? + name.len() + 2;
            k[start..].split('"').next().map(str::to_owned)
        };
        let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for k in board.keys() {
            if let (Some(rep), Some(team)) = (label(k, "rep"), label(k, "team")) {
                out.entry(rep).or_default().insert(team);
            }
        }
        out
    }
    let (ta, tb) = (teams(a), teams(b));
    let reps: std::collections::BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
    reps.into_iter()
        .filter(|r| ta.get(*r) != tb.get(*r))
        .take(10)
        .map(|r| {
            let list = |t: &BTreeMap<String, std::collections::BTreeSet<String>>| {
                t.get(r)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default()
            };
            (r.clone(), list(&ta), list(&tb))
        })
        .collect()
}

/// Renders deploy/grafana/dashboards as provisioning does: render-dashboards.sh with `config`
/// and `env` (over the script's defaults, none inherited) into `out`, emptied first. Returns
/// the rendered boards' file names and texts, sorted by name.
pub fn render_dashboards(config: &Path, env: &[(&str, &str)], out: &Path) -> Vec<(String, String)> {
    let _ = std::fs::remove_dir_all(out);
    let run = Command::new("sh")
        .arg(root().join("deploy/grafana/render-dashboards.sh"))
        .arg(config)
        .arg(root().join("deploy/grafana/dashboards"))
        .arg(out)
        .env_remove("SALESPULSE_CONTRACT__REPORTING_CURRENCY")
        .env_remove("STALE_AFTER_SECONDS")
        .envs(env.iter().copied())
        .output()
        .expect("sh runs");
    assert!(
        run.status.success(),
        "render-dashboards.sh {env:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut boards: Vec<(String, String)> = std::fs::read_dir(out)
        .expect("rendered boards")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read_to_string(&path).expect("readable"))
        })
        .collect();
    boards.sort();
    boards
}

/// Runs promtool (in `dir`, if given); panics with its output unless it succeeds, else returns
/// stdout and stderr.
pub fn promtool(dir: Option<&Path>, args: &[&str]) -> String {
    let mut cmd = Command::new("promtool");
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .expect("promtool is installed (scripts/setup.sh installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}
