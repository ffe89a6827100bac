//! The newcomer files parse and say what the docs promise.

use std::collections::BTreeSet;
use std::path::Path;

use common::token_store::TokenStore;
use testkit::repo::{env_example_keys, root};

#[test]
fn token_store_example_parses() {
    let path = root().join("tokenStore.example.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let file = TokenStore::parse(&path, &text).unwrap();
    let account = &file.accounts["twitch:mybotaccount"];
    assert_eq!(account.key(), "twitch:mybotaccount");
    assert!(
        !format!("{account:?}").contains("REPLACE-ME"),
        "Debug redacts tokens"
    );
}

#[test]
fn docker_compose_parses_and_runs_the_four_services() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().expect("services");
    let names: BTreeSet<_> = services.keys().filter_map(|k| k.as_str()).collect();
    for want in ["rabbitmq", "auth-server", "ingestor", "consumer"] {
        assert!(names.contains(want), "compose lacks service {want}");
    }
    let rabbit = &doc["services"]["rabbitmq"];
    assert_eq!(rabbit["image"].as_str(), Some("rabbitmq:3-management"));
    assert!(
        rabbit["healthcheck"]["test"].is_sequence(),
        "rabbitmq has a healthcheck"
    );
    let ports: Vec<_> = rabbit["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    // Published on loopback only: guest/guest must not face the network.
    assert!(
        ports.contains(&"127.0.0.1:5672:5672") && ports.contains(&"127.0.0.1:15672:15672"),
        "{ports:?}"
    );
    for svc in ["auth-server", "ingestor", "consumer"] {
        // The YAML merge key (<<: *service) is resolved by compose; check
        // the anchor it merges from.
        let s = &doc["services"][svc];
        let merged = if s.get("<<").is_some() { &s["<<"] } else { s };
        assert_eq!(
            merged["depends_on"]["rabbitmq"]["condition"].as_str(),
            Some("service_healthy"),
            "{svc} waits for a healthy broker"
        );
        assert!(
            merged["build"].is_string(),
            "{svc} is built from the Dockerfile"
        );
        assert_eq!(s["command"][0].as_str(), Some(svc));
    }
    assert!(Path::new(&root().join("Dockerfile")).exists());
}

/// Names read straight from the environment in the services' sources
/// (`env::var("X")`, clap `env = "X"`) must be in `.env.example` too; the
/// config structs' keys are checked by each service's own test.
#[test]
fn env_example_lists_every_variable_read_directly() {
    let listed = env_example_keys();
    let mut missing = BTreeSet::new();
    for krate in ["common", "auth-server", "ingestor", "consumer"] {
        for file in rust_files(&root().join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in env_names(&text) {
                if !listed.contains(&name) {
                    missing.insert(format!("{name} ({})", file.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for pat in ["env::var(\"", "env::var_os(\"", "env = \""] {
        let mut rest = text;
        while let Some(i) = rest.find(pat) {
            rest = &rest[i + pat.len()..];
            if let Some(end) = rest.find('"') {
                names.push(rest[..end].to_owned());
            }
        }
    }
    names
}

#[test]
fn the_env_scanner_finds_names() {
    let names = env_names(r#"std::env::var("A_B") ... #[arg(long, env = "C")] var_os("D")"#);
    assert_eq!(names, ["A_B", "C"]);
}

#[test]
fn readme_configuration_table_lists_every_variable() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let missing: Vec<_> = env_example_keys()
        .into_iter()
        .filter(|k| !readme.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's configuration table lacks {missing:?}"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let last = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap();
    assert!(
        readme.contains(last.trim()),
        "README lacks the CI command `{last}`"
    );
}

/// Every `chatbus_*` metric name the sources register.
fn metric_names_in_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for krate in ["common", "auth-server", "ingestor", "consumer"] {
        for file in rust_files(&root().join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("\"chatbus_") {
                rest = &rest[i + 1..];
                let end = rest.find('"').unwrap_or(0);
                names.insert(rest[..end].to_owned());
            }
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_only_uses_metrics_the_services_export() {
    let path = root().join("ops/grafana/dashboards/chatbus.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let known = metric_names_in_code();
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("chatbus_") {
                rest = &rest[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                used.insert(base.to_owned());
                rest = &rest[end..];
            }
        }
    }
    assert!(
        used.len() > 20,
        "the dashboard covers the services ({} metrics)",
        used.len()
    );
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "dashboard uses metrics no service exports: {unknown:?}"
    );
}

#[test]
fn the_ops_profile_runs_prometheus_and_grafana_with_the_dashboard() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for svc in ["prometheus", "grafana"] {
        let s = &doc["services"][svc];
        assert_eq!(s["profiles"][0].as_str(), Some("ops"), "{svc} is optional");
        for volume in s["volumes"].as_sequence().unwrap() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(root().join(host).exists(), "{svc} mounts missing {host}");
        }
    }
    let prom: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("ops/prometheus.yml")).unwrap())
            .unwrap();
    let jobs: Vec<_> = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|j| j["job_name"].as_str())
        .collect();
    assert!(jobs.contains(&"ingestor") && jobs.contains(&"consumer"));
}
