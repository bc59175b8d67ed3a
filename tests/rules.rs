//! The Prometheus rules and configuration under deploy/: promtool must accept every rule file
//! and both Prometheus configurations, every unit test must pass, and every alert must be
//! exercised by a unit test that expects it to fire.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use salespulse_e2e::{promtool, root};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TestFile {
    rule_files: Vec<String>,
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Debug, Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_yaml::Value>,
}

/// Files of `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} file in {}", dir.display());
    found
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn display(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
        .to_owned()
}

/// Checks a Prometheus configuration and that it loads exactly the expected rule files (a
/// glob that matches nothing passes `check config` silently).
fn check_config(config: &Path, rule_files: usize) {
    let out = promtool(None, &["check", "config", &display(config)]);
    assert!(
        out.contains(&format!("SUCCESS: {rule_files} rule files found")),
        "{} must load the {rule_files} rule files:\n{out}",
        config.display()
    );
}

#[test]
fn prometheus_rules_and_configs_pass_promtool() {
    let prom = root().join("deploy/prometheus");
    let rules_dir = prom.join("rules");

    // Rule files: valid, and what they define.
    let rule_files = files(&rules_dir, ".rules.yml");
    let mut alerts: BTreeMap<String, String> = BTreeMap::new();
    let mut records = 0;
    for path in &rule_files {
        let file: RuleFile = read_yaml(path);
        let mut count = 0;
        for group in &file.groups {
            for rule in &group.rules {
                count += 1;
                match (&rule.alert, &rule.record) {
                    (Some(alert), None) => {
                        let previous = alerts.insert(alert.clone(), group.name.clone());
                        assert!(previous.is_none(), "alert {alert} is defined twice");
                    }
                    (None, Some(_)) => records += 1,
                    _ => panic!(
                        "a rule of group {} in {} must be an alert or a record",
                        group.name,
                        path.display()
                    ),
                }
            }
        }
        let out = promtool(None, &["check", "rules", &display(path)]);
        assert!(
            out.contains(&format!("SUCCESS: {count} rules found")),
            "promtool must find the {count} rules of {}:\n{out}",
            path.display()
        );
    }

    // Unit tests: they pass, load every rule file, and see every alert fire.
    let test_files = files(&rules_dir.join("tests"), ".test.yml");
    let mut loaded: BTreeSet<PathBuf> = BTreeSet::new();
    let mut fired: BTreeSet<String> = BTreeSet::new();
    let mut tested: BTreeSet<String> = BTreeSet::new();
    let mut groups = 0;
    for path in &test_files {
        let file: TestFile = read_yaml(path);
        let dir = path.parent().expect("a test file has a directory");
        for rf in &file.rule_files {
            let resolved = dir
                .join(rf)
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: rule file {rf}: {e}", path.display()));
            loaded.insert(resolved);
        }
        for group in &file.tests {
            groups += 1;
            for t in &group.alert_rule_test {
                assert!(
                    alerts.contains_key(&t.alertname),
                    "{} tests {}, which no rule file defines",
                    path.display(),
                    t.alertname
                );
                tested.insert(t.alertname.clone());
                if !t.exp_alerts.is_empty() {
                    fired.insert(t.alertname.clone());
                }
            }
        }
        let out = promtool(None, &["test", "rules", &display(path)]);
        assert!(out.contains("SUCCESS"), "{}:\n{out}", path.display());
    }
    for path in &rule_files {
        let path = path.canonicalize().expect("rule file path");
        assert!(
            loaded.contains(&path),
            "no unit test loads {}",
            path.display()
        );
    }
    let untested: Vec<&String> = alerts.keys().filter(|a| !tested.contains(*a)).collect();
    assert!(
        untested.is_empty(),
        "alerts without a unit test: {untested:?}"
    );
    let never_fired: Vec<&String> = alerts.keys().filter(|a| !fired.contains(*a)).collect();
    assert!(
        never_fired.is_empty(),
        "alerts no unit test expects to fire: {never_fired:?}"
    );

    // Configurations: the one scripts/run.sh uses, and the compose one with its rules
    // directory where the compose file mounts it.
    check_config(&prom.join("prometheus.yml"), rule_files.len());
    let compose_text =
        std::fs::read_to_string(prom.join("prometheus-compose.yml")).expect("compose config");
    let mount = "/etc/prometheus/rules/";
    assert!(
        compose_text.contains(mount),
        "prometheus-compose.yml loads its rules from {mount}"
    );
    let tmp = std::env::temp_dir().join(format!("salespulse-rules-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temporary directory");
    let compose = tmp.join("prometheus-compose.yml");
    let real_dir = format!(
        "{}/",
        display(&rules_dir.canonicalize().expect("rules dir"))
    );
    std::fs::write(&compose, compose_text.replace(mount, &real_dir))
        .expect("writing the compose config copy");
    check_config(&compose, rule_files.len());
    std::fs::remove_dir_all(&tmp).expect("removing the temporary directory");

    println!(
        "rules: {} rule files ({} alerts, {records} recording rules), {} test files ({groups} test groups), 2 configs: promtool clean",
        rule_files.len(),
        alerts.len(),
        test_files.len()
    );
}

#[test]
fn alertmanager_config_routes_every_severity_to_a_receiver() {
    let path = root().join("deploy/alertmanager/alertmanager.yml");
    let doc: serde_yaml::Value = read_yaml(&path);
    let receivers: BTreeSet<&str> = doc["receivers"]
        .as_sequence()
        .expect("receivers")
        .iter()
        .map(|r| r["name"].as_str().expect("a receiver has a name"))
        .collect();
    let route = &doc["route"];
    let group_by: BTreeSet<&str> = route["group_by"]
        .as_sequence()
        .expect("route.group_by")
        .iter()
        .map(|l| l.as_str().expect("a label name"))
        .collect();
    assert_eq!(group_by, BTreeSet::from(["alertname", "team", "rep"]));
    let default = route["receiver"].as_str().expect("route.receiver");
    assert!(receivers.contains(default), "unknown receiver {default}");
    for severity in ["critical", "warning", "info"] {
        let matcher = format!("severity=\"{severity}\"");
        let sub = route["routes"]
            .as_sequence()
            .expect("route.routes")
            .iter()
            .find(|r| {
                r["matchers"]
                    .as_sequence()
                    .is_some_and(|m| m.iter().any(|m| m.as_str() == Some(matcher.as_str())))
            })
            .unwrap_or_else(|| panic!("no route for {matcher}"));
        let receiver = sub["receiver"].as_str().unwrap_or(default);
        assert!(receivers.contains(receiver), "unknown receiver {receiver}");
    }
    // amtool comes with Debian's prometheus-alertmanager, which the tests do not require.
    match Command::new("amtool")
        .args(["check-config", &display(&path)])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "amtool check-config failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("alertmanager: amtool not installed, structure checked only");
        }
        Err(e) => panic!("running amtool: {e}"),
    }
}
