//! docker-compose.yml cannot run here (no Docker engine): check that it parses, names every
//! service, and that every file it mounts exists.

use salespulse_e2e::root;

#[test]
fn compose_file_parses_and_its_mounts_exist() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let services = doc["services"].as_mapping().expect("services");
    for name in ["kafka", "deals", "activities", "simulator", "prometheus"] {
        assert!(services.contains_key(name), "service {name} is missing");
    }
    let mut mounts = 0;
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().expect("short volume syntax");
            let host = spec.split(':').next().unwrap_or_default();
            if host.starts_with("./") {
                assert!(root().join(host).exists(), "{name:?} mounts {host}, which does not exist");
                mounts += 1;
            }
        }
    }
    assert!(mounts >= 3, "the services mount the shared configuration");
}
