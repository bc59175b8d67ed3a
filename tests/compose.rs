//! docker-compose.yml cannot run here (no Docker engine): check that it parses, names every
//! service, that every file and directory it mounts exists, and that the configuration files
//! it mounts point at each other consistently.

use std::path::{Path, PathBuf};

use salespulse_e2e::root;
use serde_yaml::{Mapping, Value};

fn compose() -> (String, Value) {
    let text =
        std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let mut doc: Value = serde_yaml::from_str(&text).expect("valid YAML");
    // Resolve `<<: *anchor` the way Compose does.
    doc.apply_merge().expect("merge keys resolve");
    (text, doc)
}

fn services(doc: &Value) -> &Mapping {
    doc["services"].as_mapping().expect("services")
}

/// `(host, container, read_only)` of a service's bind mounts (short syntax).
fn mounts(svc: &Value) -> Vec<(String, String, bool)> {
    svc["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| {
            let spec = v.as_str().expect("short volume syntax");
            let mut parts = spec.split(':');
            let host = parts.next().unwrap_or_default().to_owned();
            let container = parts.next().unwrap_or_default().to_owned();
            let ro = parts.next() == Some("ro");
            (host, container, ro)
        })
        .collect()
}

/// The host path mounted at `container` (or above it) in `svc`.
fn host_path_of(svc: &Value, container: &str) -> Option<PathBuf> {
    mounts(svc).into_iter().find_map(|(host, target, _)| {
        let rest = Path::new(container).strip_prefix(&target).ok()?;
        let base = root().join(host);
        // Joining an empty remainder would add a trailing slash, which a file path rejects.
        Some(if rest.as_os_str().is_empty() {
            base
        } else {
            base.join(rest)
        })
    })
}

fn ports(svc: &Value) -> Vec<String> {
    svc["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| p.as_str().expect("ports as strings").to_owned())
        .collect()
}

fn env<'a>(svc: &'a Value, key: &str) -> Option<&'a str> {
    svc["environment"][key].as_str()
}

#[test]
fn compose_file_parses_and_its_mounts_exist() {
    let (text, doc) = compose();
    let services = services(&doc);
    for name in [
        "kafka",
        "deals",
        "activities",
        "targets",
        "simulator",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(services.contains_key(name), "service {name} is missing");
    }
    for name in ["deals", "activities", "targets", "simulator"] {
        let svc = &services[name];
        assert!(svc["command"].is_sequence(), "{name} has a command");
        assert_eq!(
            env(svc, "SALESPULSE_CONFIG"),
            Some("/etc/salespulse/salespulse.toml"),
            "{name} reads the shared configuration"
        );
    }
    assert!(
        root().join("Dockerfile").exists(),
        "the services are built from the Dockerfile"
    );
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        header.contains("docker compose up") && header.contains("http://localhost:3000"),
        "the leading comment says how to start it and where the board is"
    );

    let mut mounted = 0;
    for (name, svc) in services {
        for (host, container, _) in mounts(svc) {
            if !host.starts_with("./") {
                continue;
            }
            let path = root().join(&host);
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{name:?} mounts {host}, which does not exist: {e}"));
            // Compose creates a missing host path as an empty directory, so a file mounted
            // onto a file path must really be a file, and a directory a directory.
            let wants_file = Path::new(&container).extension().is_some();
            assert_eq!(
                meta.is_file(),
                wants_file,
                "{name:?} mounts {host} at {container}: expected a {}",
                if wants_file { "file" } else { "directory" }
            );
            mounted += 1;
        }
    }
    assert!(mounted >= 8, "the services mount their configuration");
}

#[test]
fn targets_service_shares_the_image_and_configuration() {
    let (_, doc) = compose();
    let services = services(&doc);
    let targets = &services["targets"];
    assert_eq!(
        targets["command"],
        serde_yaml::from_str::<Value>(r#"["salespulse-targets"]"#).expect("yaml")
    );
    assert_eq!(targets["image"], services["deals"]["image"], "one image");
    assert!(ports(targets).contains(&"9103:9103".to_owned()));
    for name in ["deals", "activities", "targets", "simulator"] {
        assert_eq!(
            env(&services[name], "SALESPULSE_TARGETS__LISTEN"),
            Some("0.0.0.0:9103"),
            "{name} gets the environment of the anchor"
        );
    }
}

#[test]
fn prometheus_mounts_rules_and_reaches_the_services() {
    let (_, doc) = compose();
    let services = services(&doc);
    let prom = &services["prometheus"];
    assert!(
        mounts(prom)
            .iter()
            .any(|(h, c, ro)| h == "./deploy/prometheus/rules"
                && c == "/etc/prometheus/rules"
                && *ro),
        "prometheus mounts the rules directory read-only"
    );
    let config_path =
        host_path_of(prom, "/etc/prometheus/prometheus.yml").expect("prometheus.yml is mounted");
    let config: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&config_path).expect("prometheus configuration"),
    )
    .expect("valid YAML");

    // Every rule file pattern resolves, through the mounts, to files on the host.
    for pattern in config["rule_files"].as_sequence().into_iter().flatten() {
        let pattern = pattern.as_str().expect("rule file pattern");
        let (dir, glob) = pattern.rsplit_once('/').expect("absolute pattern");
        let host_dir = host_path_of(prom, dir)
            .unwrap_or_else(|| panic!("{pattern} is outside every mount of prometheus"));
        let suffix = glob.trim_start_matches('*');
        let found = std::fs::read_dir(&host_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", host_dir.display()))
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(suffix));
        assert!(found, "{pattern} matches no file in {}", host_dir.display());
    }

    // Every scrape and alerting target is a compose service.
    let mut hosts = Vec::new();
    collect_targets(&config, &mut hosts);
    assert!(!hosts.is_empty(), "prometheus scrapes something");
    for target in &hosts {
        let host = target.split(':').next().unwrap_or_default();
        assert!(
            services.contains_key(host),
            "prometheus targets {target}, which is no compose service"
        );
    }
    for needed in ["deals:9101", "activities:9102", "targets:9103"] {
        assert!(
            hosts.iter().any(|h| h == needed),
            "prometheus scrapes {needed}"
        );
    }
}

fn collect_targets(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("targets") {
                    out.extend(
                        v.as_sequence()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t.as_str().map(str::to_owned)),
                    );
                } else {
                    collect_targets(v, out);
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|x| collect_targets(x, out)),
        _ => {}
    }
}

#[test]
fn alertmanager_has_its_configuration() {
    let (_, doc) = compose();
    let am = &services(&doc)["alertmanager"];
    assert!(am["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("prom/alertmanager")));
    assert!(ports(am).contains(&"9093:9093".to_owned()));
    let config = host_path_of(am, "/etc/alertmanager/alertmanager.yml")
        .expect("alertmanager.yml is mounted");
    assert!(
        config.ends_with("deploy/alertmanager/alertmanager.yml"),
        "{}",
        config.display()
    );
    let text = std::fs::read_to_string(&config).expect("alertmanager.yml exists");
    let v: Value = serde_yaml::from_str(&text).expect("alertmanager.yml is valid YAML");
    assert!(v["route"].is_mapping(), "alertmanager.yml has a route");
}

#[test]
fn grafana_is_provisioned_and_open_to_anonymous_viewers() {
    let (_, doc) = compose();
    let services = services(&doc);
    let grafana = &services["grafana"];
    assert!(grafana["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("grafana/grafana")));
    assert!(ports(grafana).contains(&"3000:3000".to_owned()));
    let m = mounts(grafana);
    for (host, container) in [
        ("./deploy/grafana/provisioning", "/etc/grafana/provisioning"),
        ("./deploy/grafana/dashboards", "/etc/salespulse/dashboards"),
        (
            "./deploy/grafana/render-dashboards.sh",
            "/etc/salespulse/render-dashboards.sh",
        ),
        (
            "./config/salespulse.toml",
            "/etc/salespulse/salespulse.toml",
        ),
    ] {
        assert!(
            m.iter()
                .any(|(h, c, ro)| h == host && c == container && *ro),
            "grafana mounts {host} at {container} read-only"
        );
    }
    // Before Grafana starts, the boards are written with the reporting currency's unit where
    // the provisioning reads them (deploy/grafana/render-dashboards.sh).
    let start = grafana["command"][0].as_str().unwrap_or_default();
    assert_eq!(
        grafana["entrypoint"].as_sequence().map(Vec::len),
        Some(2),
        "grafana starts through sh -c"
    );
    assert_eq!(
        start,
        "sh /etc/salespulse/render-dashboards.sh /etc/salespulse/salespulse.toml \
         /etc/salespulse/dashboards /var/lib/grafana/dashboards && exec /run.sh",
        "grafana renders the boards, then starts"
    );
    let rendered = "/var/lib/grafana/dashboards";
    assert_eq!(env(grafana, "GF_AUTH_ANONYMOUS_ENABLED"), Some("true"));
    assert_eq!(env(grafana, "GF_AUTH_ANONYMOUS_ORG_ROLE"), Some("Viewer"));
    // The render script's threshold for the boards' stale banner, overridable from the host.
    assert_eq!(
        env(grafana, "STALE_AFTER_SECONDS"),
        Some("${STALE_AFTER_SECONDS:-900}"),
        "render-dashboards.sh gets the banner's STALE_AFTER_SECONDS"
    );
    let home = env(grafana, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH").expect("home dashboard");
    let name = home
        .strip_prefix(rendered)
        .and_then(|n| n.strip_prefix('/'))
        .expect("the home dashboard is a rendered board");
    let home = host_path_of(grafana, &format!("/etc/salespulse/dashboards/{name}"))
        .expect("the home dashboard's source is mounted");
    assert!(
        home.ends_with("sales-floor.json") && home.is_file(),
        "{}",
        home.display()
    );

    // The provisioned datasource points at the compose Prometheus, under the uid the
    // dashboards use; the dashboard provider reads the mounted directory.
    let ds_file = host_path_of(
        grafana,
        "/etc/grafana/provisioning/datasources/prometheus.yml",
    )
    .expect("mounted");
    let ds: Value =
        serde_yaml::from_str(&std::fs::read_to_string(ds_file).expect("datasource provisioning"))
            .expect("valid YAML");
    let ds = &ds["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    assert_eq!(ds["uid"].as_str(), Some("prometheus"));
    assert_eq!(ds["isDefault"].as_bool(), Some(true));
    let url = ds["url"].as_str().expect("url");
    assert_eq!(url, "http://prometheus:9090");
    assert!(services.contains_key("prometheus"));
    assert!(ports(&services["prometheus"]).contains(&"9090:9090".to_owned()));

    let provider_file = host_path_of(
        grafana,
        "/etc/grafana/provisioning/dashboards/salespulse.yml",
    )
    .expect("mounted");
    let p: Value = serde_yaml::from_str(
        &std::fs::read_to_string(provider_file).expect("dashboard provisioning"),
    )
    .expect("valid YAML");
    let p = &p["providers"][0];
    assert_eq!(p["type"].as_str(), Some("file"));
    assert_eq!(p["folder"].as_str(), Some("salespulse"));
    let dir = p["options"]["path"].as_str().expect("path");
    assert_eq!(dir, rendered);
    let host_dir =
        host_path_of(grafana, "/etc/salespulse/dashboards").expect("the dashboards are mounted");
    let boards = std::fs::read_dir(&host_dir)
        .expect("dashboards directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert!(boards >= 6, "{boards} dashboards in {}", host_dir.display());
}
