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

/// `docker-compose.yml` with its merge keys (`<<: *service`) applied, as
/// Compose applies them.
fn compose() -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    doc
}

#[test]
fn docker_compose_parses_and_runs_the_four_services() {
    let doc = compose();
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
    for svc in ["auth-server", "ingestor", "consumer"] {
        let s = &doc["services"][svc];
        assert_eq!(
            s["depends_on"]["rabbitmq"]["condition"].as_str(),
            Some("service_healthy"),
            "{svc} waits for a healthy broker"
        );
        assert_eq!(s["command"][0].as_str(), Some(svc));
    }
    // The consumer's queue is bound before the ingestor publishes.
    assert_eq!(
        doc["services"]["ingestor"]["depends_on"]["consumer"]["condition"].as_str(),
        Some("service_healthy")
    );
    let consumer_check = doc["services"]["consumer"]["healthcheck"]["test"]
        .as_sequence()
        .unwrap();
    assert!(
        consumer_check
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.ends_with("/readyz"))),
        "{consumer_check:?}"
    );
    assert!(Path::new(&root().join("Dockerfile")).exists());
}

#[test]
fn docker_compose_publishes_on_loopback_on_ports_a_variable_can_move() {
    let doc = compose();
    let mut published = BTreeSet::new();
    for (name, s) in doc["services"].as_mapping().unwrap() {
        for port in s["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap();
            // guest/guest and an open history API must not face the network.
            assert!(port.starts_with("127.0.0.1:"), "{name:?} publishes {port}");
            published.insert(port.to_owned());
        }
    }
    for want in [
        "127.0.0.1:${RABBITMQ_HOST_PORT:-5672}:5672",
        "127.0.0.1:${RABBITMQ_MANAGEMENT_HOST_PORT:-15672}:15672",
        "127.0.0.1:${AUTH_HOST_PORT:-3000}:3000",
        "127.0.0.1:${INGESTOR_HOST_PORT:-9100}:9100",
        "127.0.0.1:${CONSUMER_HOST_PORT:-8080}:8080",
    ] {
        assert!(published.contains(want), "{want} not in {published:?}");
    }
}

#[test]
fn docker_compose_builds_one_image_and_does_not_restart_a_bad_config_forever() {
    let doc = compose();
    let mut builders = Vec::new();
    for (name, s) in doc["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if s["image"].as_str() == Some("chatbus:local") {
            if s.get("build").is_some() {
                builders.push(name);
            }
            // A bad setting exits with code 2 at start: restarting it
            // without end only repeats the message.
            assert_eq!(s["restart"].as_str(), Some("on-failure:5"), "{name}");
        } else {
            assert!(
                s.get("build").is_none(),
                "{name} builds an image of its own"
            );
        }
    }
    // One per entry point: the default stack, and the scale profile alone.
    assert_eq!(builders, ["auth-server", "ingestor-scale"]);
}

#[test]
fn docker_compose_demo_profile_reads_the_fake_twitch_of_the_same_image() {
    let doc = compose();
    let fake = &doc["services"]["fake-twitch"];
    assert_eq!(fake["profiles"][0].as_str(), Some("demo"));
    assert_eq!(fake["image"].as_str(), Some("chatbus:local"));
    assert_eq!(fake["command"][0].as_str(), Some("fake-twitch"));
    let demo = &doc["services"]["ingestor-demo"];
    assert_eq!(demo["profiles"][0].as_str(), Some("demo"));
    assert_eq!(
        demo["environment"]["TWITCH_IRC_ADDR"].as_str(),
        Some("fake-twitch:6667")
    );
    assert!(demo.get("env_file").is_none(), "the demo never reads .env");
    // The image carries the binary and the corpus it replays.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("--bin fake-twitch"), "{dockerfile}");
    assert!(
        dockerfile.contains("testdata/corpus/twitch-irc-real.txt"),
        "{dockerfile}"
    );
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
fn the_configuration_doc_lists_every_variable() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let missing: Vec<_> = env_example_keys()
        .into_iter()
        .filter(|k| !doc.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md's tables lack {missing:?}"
    );
}

/// The command `.ci/run` runs last.
fn ci_command() -> String {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    ci.lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let command = ci_command();
    assert!(
        readme.lines().any(|l| l.trim() == command),
        "README lacks the CI command `{command}` on a line of its own"
    );
}

#[test]
fn the_readme_shows_the_run_and_test_commands_in_its_first_40_lines() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let head: Vec<_> = readme.lines().take(40).collect();
    for command in ["scripts/dev.sh --demo".to_owned(), ci_command()] {
        assert!(
            head.iter().any(|l| l.trim_start().starts_with(&command)),
            "README's first 40 lines lack `{command}`"
        );
    }
}

#[test]
fn the_readme_holds_no_dated_timings() {
    // Figures live in docs/benchmarks.md, with their method and date.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for unit in [" min ", " GB", " msg/s"] {
        assert!(!readme.contains(unit), "README holds a figure: `{unit}`");
    }
    let is_date = |w: &[u8]| {
        w.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
    };
    assert!(
        !readme.as_bytes().windows(10).any(is_date),
        "README holds a date"
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
    let doc = compose();
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
