//! The broker's SASL_PLAINTEXT listener (mechanism PLAIN), end to end: the deals service
//! authenticates and serves correct bookings; a wrong password is refused loudly and never
//! becomes ready; the password shows up in no log, on no endpoint and not in
//! `--print-config`; the HTTP endpoint listens on the configured address only.
//! The broker's SSL listener: the deals service verifies the broker against the local CA and
//! serves correct bookings over TLS; without that CA it refuses the broker and never becomes
//! ready.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeZone, Utc};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use salespulse_e2e::*;
use serde_json::json;

const USER: &str = "salespulse";

fn sasl_port() -> u16 {
    std::env::var("KAFKA_SASL_PORT")
        .ok()
        .map(|p| p.parse().expect("KAFKA_SASL_PORT is a port number"))
        .unwrap_or(19094)
}

fn sasl_bootstrap() -> String {
    format!("127.0.0.1:{}", sasl_port())
}

fn ssl_bootstrap() -> String {
    let port = std::env::var("KAFKA_SSL_PORT").unwrap_or_else(|_| "19095".into());
    format!("127.0.0.1:{port}")
}

/// The CA that signed the local broker's certificate (made by scripts/kafka.sh).
fn ssl_ca() -> PathBuf {
    let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "19092".into());
    let cache = std::env::var("SALESPULSE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache"));
    cache.join(format!("kafka/run-{port}/tls/ca.pem"))
}

fn require_ssl() {
    let addr: SocketAddr = ssl_bootstrap().parse().expect("SSL address");
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() || !ssl_ca().exists() {
        panic!(
            "no SSL listener at {addr} or no CA at {}: the broker must be started by the \
             current scripts/kafka.sh (restart an older broker)",
            ssl_ca().display()
        );
    }
}

/// Client properties of the SASL listener.
fn sasl_props(secret: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_PLAINTEXT".into(),
        "sasl.mechanisms=PLAIN".into(),
        format!("sasl.username={USER}"),
        format!("sasl.password={secret}"),
    ]
}

fn password() -> String {
    std::env::var("KAFKA_SASL_PASSWORD").unwrap_or_else(|_| "salespulse-secret".into())
}

/// Fails with a clear message when the SASL listener does not answer.
fn require_sasl() {
    let addr: SocketAddr = sasl_bootstrap().parse().expect("SASL address");
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "no SASL_PLAINTEXT listener at {addr}: the broker must be started by the current \
             scripts/kafka.sh (KAFKA_SASL_PORT selects the port; restart an older broker)"
        );
    }
}

fn rfc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The command line of a deals service talking to the broker at `bootstrap` with the client
/// properties `props` (passed as `-X`).
fn deals_command(
    topics: &Topics,
    port: u16,
    group: &str,
    bootstrap: &str,
    props: &[String],
) -> Command {
    let mut cmd = with_config("salespulse-deals");
    cmd.args(["--bootstrap", bootstrap])
        .args(props.iter().flat_map(|p| ["-X", p.as_str()]))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--group-id", group])
        .env_remove("KAFKA_BOOTSTRAP")
        .envs(topics.env())
        .env("SALESPULSE_LOG__FORMAT", "text")
        .env("NO_COLOR", "1");
    cmd
}

/// A deals service with its log file, killed on drop.
#[derive(Debug)]
struct Deals {
    child: Child,
    port: u16,
    log: PathBuf,
    label: &'static str,
}

impl Deals {
    fn start(
        label: &'static str,
        topics: &Topics,
        group: &str,
        bootstrap: &str,
        props: &[String],
    ) -> Deals {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-deals-{label}.log", topics.suffix));
        let file = std::fs::File::create(&log).expect("log file");
        let child = deals_command(topics, port, group, bootstrap, props)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("deals service starts");
        Deals {
            child,
            port,
            log,
            label,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        read_log(&self.log)
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (bounded) until `/readyz` answers 200; panics with the log's tail otherwise.
    async fn wait_ready(&mut self, http: &reqwest::Client, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                panic!(
                    "deals ({}) exited early with {status}; log {}:\n{}",
                    self.label,
                    self.log.display(),
                    tail(&self.log_text(), 30)
                );
            }
            if let Some((200, _)) = get(http, &self.url("/readyz")).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "deals ({}) not ready within {within:?}; log {}:\n{}",
            self.label,
            self.log.display(),
            tail(&self.log_text(), 30)
        );
    }

    /// SIGTERM, then wait (bounded) for the exit.
    fn terminate(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        None
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Deals {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// Status and body of a GET, `None` when nothing answers.
async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = http.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// Where a secret occurs in a text, as a short description for a failure message.
fn leak(text: &str, secret: &str) -> Option<String> {
    let at = text.find(secret)?;
    let line = text[..at].lines().count().max(1);
    Some(format!("line {line}"))
}

/// Lines saying that the broker rejected the credentials, however librdkafka or the service
/// words it. (A connection torn down during the SASL handshake, which librdkafka also calls a
/// "SASL authentication error", is not a rejection.)
fn auth_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            // A handshake cut by the transport (a connection closed at shutdown, say).
            if l.contains("broker transport failure") {
                return false;
            }
            l.contains("authentication failed")
                || l.contains("authentication failure")
                || l.contains("invalid username or password")
                || l.contains("invalid credentials")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_authenticates_and_refuses_a_wrong_password() {
    require_broker();
    require_sasl();
    let secret = password();
    let wrong = format!("wrong-{}", Utc::now().timestamp_micros());
    assert!(
        !secret.contains(&wrong) && !wrong.contains(&secret),
        "the wrong password must differ from the right one"
    );
    let topics = Topics::unique("security");
    let http = http_client();

    // The right password: ready over SASL, correct numbers.
    let mut good = Deals::start(
        "sasl",
        &topics,
        &format!("g-{}", topics.suffix),
        &sasl_bootstrap(),
        &sasl_props(&secret),
    );
    good.wait_ready(&http, Duration::from_secs(90)).await;

    let p = producer();
    let now = Utc::now().timestamp();
    let rep = format!("rep-{}", topics.suffix);
    let roster =
        json!({"rep_id": rep, "team_id": "team-sec", "name": "Security Rep", "active": true});
    produce_json(&p, &topics.roster, &rep, &roster).await;
    let deal = json!({
        "event_id": format!("ev-{}", topics.suffix), "deal_id": format!("deal-{}", topics.suffix),
        "rep_id": rep, "stage": "closed_won", "amount": "100", "currency": "USD",
        "created_at": rfc(now - 120), "occurred_at": rfc(now - 60),
    });
    let deal_key = format!("deal-{}", topics.suffix);
    produce_json(&p, &topics.deals, &deal_key, &deal).await;

    let keys = [
        metric_key("sales_org_bookings", &[("window", "1h")]),
        metric_key("sales_org_bookings", &[("window", "today")]),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let body = get(&http, &good.url("/metrics"))
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        let parsed = parse_metrics(&body);
        if keys.iter().any(|k| parsed.get(k).copied() == Some(100.0)) {
            break body;
        }
        if let Some(status) = good.exited() {
            panic!(
                "deals (sasl) exited with {status}; log:\n{}",
                tail(&good.log_text(), 30)
            );
        }
        if Instant::now() >= deadline {
            let shown: Vec<&str> = body
                .lines()
                .filter(|l| l.starts_with("sales_org_bookings"))
                .collect();
            panic!("bookings of 100 not shown within 60 s over SASL; shown: {shown:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let complaints = promtool_check(&metrics);
    assert!(
        complaints.trim().is_empty(),
        "promtool check metrics:\n{complaints}"
    );
    assert_eq!(leak(&metrics, &secret), None, "the password is on /metrics");
    for path in ["/healthz", "/readyz"] {
        let (_, body) = get(&http, &good.url(path)).await.expect("answers");
        assert_eq!(leak(&body, &secret), None, "the password is on {path}");
    }

    // The endpoint listens on the configured address only.
    let port = good.port;
    assert!(
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok(),
        "127.0.0.1:{port} does not accept connections"
    );
    for other in [
        SocketAddr::from(([127, 0, 0, 2], port)),
        SocketAddr::from(([127, 1, 2, 3], port)),
    ] {
        assert!(
            TcpStream::connect_timeout(&other, Duration::from_secs(2)).is_err(),
            "{other} accepts connections: the endpoint listens beyond 127.0.0.1"
        );
    }

    // The whole log of the authenticated service, after a clean stop.
    let stopped = good.terminate();
    let good_log = good.log_text();
    assert_eq!(
        leak(&good_log, &secret),
        None,
        "the password is in the service's log {}",
        good.log.display()
    );
    assert!(
        auth_errors(&good_log).is_empty(),
        "credentials rejected with the right password:\n{}",
        auth_errors(&good_log).join("\n")
    );

    // A wrong password: refused, loudly, never ready, and not written anywhere.
    let mut bad = Deals::start(
        "wrong",
        &topics,
        &format!("w-{}", topics.suffix),
        &sasl_bootstrap(),
        &sasl_props(&wrong),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut bad_exit = None;
    let mut bad_bodies = String::new();
    while Instant::now() < deadline {
        if let Some((status, body)) = get(&http, &bad.url("/readyz")).await {
            assert_ne!(status, 200, "a service with a wrong password became ready");
            bad_bodies.push_str(&body);
        }
        if let Some(s) = bad.exited() {
            bad_exit = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if bad_exit.is_none() {
        if let Some((_, body)) = get(&http, &bad.url("/metrics")).await {
            bad_bodies.push_str(&body);
        }
    }
    if let Some(s) = bad_exit {
        assert!(
            !s.success(),
            "a service with a wrong password exited successfully"
        );
    }
    let bad_log = bad.log_text();
    assert_eq!(
        leak(&bad_log, &wrong),
        None,
        "the wrong password is in its log"
    );
    assert_eq!(
        leak(&bad_bodies, &wrong),
        None,
        "the wrong password is on its endpoints"
    );
    let refused = auth_errors(&bad_log);
    assert!(
        !refused.is_empty(),
        "no authentication error in the log of the service with a wrong password ({}):\n{}",
        bad.log.display(),
        tail(&bad_log, 30)
    );
    let bad_state = match bad_exit {
        Some(s) => format!("exited with {s}"),
        None => {
            bad.kill();
            "kept running unready".to_owned()
        }
    };

    println!(
        "security: SASL/PLAIN on {} ready, bookings 100 on /metrics, promtool clean, no password in log or endpoints, HTTP on 127.0.0.1:{port} only; wrong password refused ({} auth error lines, {bad_state}), stop: {}",
        sasl_bootstrap(),
        refused.len(),
        stopped.map_or_else(|| "killed after 20 s".to_owned(), |s| s.to_string()),
    );
}

/// Keeps what librdkafka reports: errors (with their codes) and log lines.
#[derive(Debug, Default)]
struct Reports {
    codes: Mutex<Vec<RDKafkaErrorCode>>,
    lines: Mutex<Vec<String>>,
}

impl Reports {
    fn line(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
    }
}

impl ClientContext for Reports {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.line(format!("{fac} {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let (Some(code), Ok(mut c)) = (error.rdkafka_error_code(), self.codes.lock()) {
            c.push(code);
        }
        self.line(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Reports {}

fn sasl_client(secret: &str) -> BaseConsumer<Reports> {
    ClientConfig::new()
        .set("bootstrap.servers", sasl_bootstrap())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", USER)
        .set("sasl.password", secret)
        .set("group.id", "salespulse-e2e-security")
        .create_with_context(Reports::default())
        .expect("SASL client")
}

/// The broker itself: the right password reads metadata over SASL, a wrong one is refused
/// with librdkafka's authentication error, and neither password is in what librdkafka says.
#[test]
fn broker_authenticates_plain_users() {
    require_broker();
    require_sasl();
    let secret = password();
    let good = sasl_client(&secret);
    let md = good
        .fetch_metadata(None, Duration::from_secs(15))
        .expect("metadata over SASL with the right password");
    assert!(!md.brokers().is_empty(), "no broker in the metadata");
    assert!(
        md.brokers()
            .iter()
            .all(|b| b.port() == i32::from(sasl_port())),
        "the SASL listener advertises other ports: {:?}",
        md.brokers()
            .iter()
            .map(|b| format!("{}:{}", b.host(), b.port()))
            .collect::<Vec<_>>()
    );

    let wrong = format!("wrong-{}", Utc::now().timestamp_micros());
    let bad = sasl_client(&wrong);
    assert!(
        bad.fetch_metadata(None, Duration::from_secs(3)).is_err(),
        "metadata with a wrong password"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut polled = Vec::new();
    let refused = |polled: &[RDKafkaErrorCode]| {
        polled.contains(&RDKafkaErrorCode::Authentication)
            || bad
                .context()
                .codes
                .lock()
                .map(|c| c.contains(&RDKafkaErrorCode::Authentication))
                .unwrap_or(false)
    };
    while Instant::now() < deadline && !refused(&polled) {
        if let Some(Err(e)) = bad.poll(Duration::from_millis(200)) {
            polled.extend(e.rdkafka_error_code());
        }
    }
    let lines = bad
        .context()
        .lines
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    assert!(
        refused(&polled),
        "no authentication error within 15 s with a wrong password; polled {polled:?}, said:\n{}",
        lines.join("\n")
    );
    let said = lines.join("\n");
    assert_eq!(
        leak(&said, &wrong),
        None,
        "librdkafka repeats the wrong password"
    );
    let said_good = good
        .context()
        .lines
        .lock()
        .map(|l| l.join("\n"))
        .unwrap_or_default();
    assert_eq!(
        leak(&said_good, &secret),
        None,
        "librdkafka repeats the password"
    );
}

#[test]
fn print_config_does_not_reveal_the_sasl_password() {
    let secret = password();
    let topics = Topics::unique("security-print");
    let out = deals_command(
        &topics,
        free_port(),
        "print-config",
        &sasl_bootstrap(),
        &sasl_props(&secret),
    )
    .arg("--print-config")
    .stdin(Stdio::null())
    .output()
    .expect("deals service runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "--print-config failed with {}:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&sasl_bootstrap()),
        "--print-config does not show the effective settings:\n{stdout}"
    );
    let shown: Vec<String> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains(&secret))
        .map(|l| l.trim().replace(&secret, "<password>"))
        .collect();
    assert!(
        shown.is_empty(),
        "--print-config prints the SASL password (-X sasl.password) in clear: {shown:?}"
    );
}

/// Produces one won deal of 100 for a rostered rep, over the PLAINTEXT listener.
async fn one_won_deal(topics: &Topics) {
    let p = producer();
    let now = Utc::now().timestamp();
    let rep = format!("rep-{}", topics.suffix);
    let roster = json!({"rep_id": rep, "team_id": "team-tls", "active": true});
    produce_json(&p, &topics.roster, &rep, &roster).await;
    let deal_id = format!("deal-{}", topics.suffix);
    let deal = json!({
        "event_id": format!("ev-{}", topics.suffix), "deal_id": deal_id,
        "rep_id": rep, "stage": "closed_won", "amount": "100", "currency": "USD",
        "created_at": rfc(now - 120), "occurred_at": rfc(now - 60),
    });
    produce_json(&p, &topics.deals, &deal_id, &deal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_verifies_the_broker_and_carries_the_numbers() {
    require_broker();
    require_ssl();
    let topics = Topics::unique("security-ssl");
    let http = http_client();
    let ca = ssl_ca();
    let trusted = vec![
        "security.protocol=SSL".to_owned(),
        format!("ssl.ca.location={}", ca.display()),
    ];
    let mut good = Deals::start(
        "ssl",
        &topics,
        &format!("g-{}", topics.suffix),
        &ssl_bootstrap(),
        &trusted,
    );
    good.wait_ready(&http, Duration::from_secs(90)).await;
    one_won_deal(&topics).await;
    let key = metric_key("sales_org_bookings", &[("window", "today")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = get(&http, &good.url("/metrics"))
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        if parse_metrics(&body).get(&key).copied() == Some(100.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bookings of 100 not shown within 60 s over SSL; log:\n{}",
            tail(&good.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stopped = good.terminate();
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the SSL service did not stop cleanly"
    );

    // A CA that did not sign the broker: the broker is refused, the service never ready.
    let dir = std::env::temp_dir().join(format!("{}-otherca", topics.suffix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let other = dir.join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not the broker's CA", "-keyout"])
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&other)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success(), "making another CA");
    let untrusted = vec![
        "security.protocol=SSL".to_owned(),
        format!("ssl.ca.location={}", other.display()),
    ];
    let mut bad = Deals::start(
        "ssl-untrusted",
        &topics,
        &format!("u-{}", topics.suffix),
        &ssl_bootstrap(),
        &untrusted,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && bad.exited().is_none() {
        if let Some((status, _)) = get(&http, &bad.url("/readyz")).await {
            assert_ne!(status, 200, "ready with a broker its CA did not sign");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = bad.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("certificate verify failed"))
        .collect();
    assert!(
        !refused.is_empty(),
        "no certificate verification error in the log ({}):\n{}",
        bad.log.display(),
        tail(&log, 30)
    );
    bad.kill();
    println!(
        "security: SSL on {} verified against the local CA, bookings 100 on /metrics; \
         another CA refused ({} certificate errors), never ready",
        ssl_bootstrap(),
        refused.len()
    );
}
