//! docker-compose.yml cannot run here (no Docker engine): check that it parses, names every
//! service, and that every file it mounts exists.

use salespulse_e2e::root;

#[test]
fn compose_file_parses_and_its_mounts_exist() {
    let text =
        std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    // Resolve `<<: *anchor` the way Compose does.
    doc.apply_merge().expect("merge keys resolve");
    let services = doc["services"].as_mapping().expect("services");
    for name in ["kafka", "deals", "activities", "simulator", "prometheus"] {
        assert!(services.contains_key(name), "service {name} is missing");
    }
    for name in ["deals", "activities", "simulator"] {
        let svc = &services[name];
        assert!(svc["command"].is_sequence(), "{name} has a command");
        assert_eq!(
            svc["environment"]["SALESPULSE_CONFIG"].as_str(),
            Some("/etc/salespulse/salespulse.toml"),
            "{name} reads the shared configuration"
        );
    }
    assert!(
        root().join("Dockerfile").exists(),
        "the services are built from the Dockerfile"
    );
    let mut mounts = 0;
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().expect("short volume syntax");
            let host = spec.split(':').next().unwrap_or_default();
            if host.starts_with("./") {
                assert!(
                    root().join(host).exists(),
                    "{name:?} mounts {host}, which does not exist"
                );
                mounts += 1;
            }
        }
    }
    assert!(mounts >= 3, "the services mount the shared configuration");
}
