//! The published contract stays equal to the Rust types: the JSON Schemas in
//! `docs/chat-event.schema.json` and `docs/chat-command.schema.json`, the
//! examples and the routing-key table in `docs/schema.md`.
//!
//! Regenerate the schema after changing the types with
//! `CHATBUS_BLESS=1 cargo nextest run -p common --test contract`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::schema::{ChatEvent, EventKind, json_schema};

fn docs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file)
}

/// `docs/<file>` is `schema` (written instead with `CHATBUS_BLESS`).
fn assert_schema_file(file: &str, schema: &serde_json::Value) {
    let generated = serde_json::to_string_pretty(schema).unwrap() + "\n";
    let path = docs(file);
    if std::env::var_os("CHATBUS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/{file} differs from the Rust types; \
         run CHATBUS_BLESS=1 cargo nextest run -p common --test contract and commit the file"
    );
}

#[test]
fn json_schema_file_matches_the_types() {
    assert_schema_file("chat-event.schema.json", &json_schema());
}

#[test]
fn the_command_json_schema_file_matches_the_types() {
    assert_schema_file("chat-command.schema.json", &common::command::json_schema());
}

/// Every ```json block in docs/schema.md that has a "schema_version" key:
/// events, and commands (those with `issued_at`).
fn all_examples() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(docs("schema.md")).unwrap();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```json") => block = Some(String::new()),
            (Some(b), "```") => {
                let v: serde_json::Value = serde_json::from_str(b)
                    .unwrap_or_else(|e| panic!("docs/schema.md has invalid JSON ({e}):\n{b}"));
                if v.get("schema_version").is_some() {
                    out.push(v);
                }
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// The event examples of docs/schema.md.
fn examples() -> Vec<serde_json::Value> {
    all_examples()
        .into_iter()
        .filter(|v| v.get("issued_at").is_none())
        .collect()
}

/// docs/schema.md has one valid, round-tripping example of each command
/// kind.
#[test]
fn schema_doc_has_one_valid_example_per_command_kind() {
    use common::command::ChatCommand;
    let mut kinds = BTreeSet::new();
    for example in all_examples()
        .into_iter()
        .filter(|v| v.get("issued_at").is_some())
    {
        let command: ChatCommand = serde_json::from_value(example.clone())
            .unwrap_or_else(|e| panic!("command example does not parse: {e}\n{example:#}"));
        command
            .validate()
            .unwrap_or_else(|e| panic!("command example is invalid: {e}\n{example:#}"));
        assert_eq!(serde_json::to_value(&command).unwrap(), example);
        kinds.insert(command.action.kind());
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["send", "delete", "timeout", "ban", "unban"]),
        "docs/schema.md needs one example per command kind"
    );
}

#[test]
fn schema_doc_has_one_valid_example_per_kind() {
    let mut kinds = BTreeSet::new();
    for example in examples() {
        let bytes = serde_json::to_vec(&example).unwrap();
        let event = ChatEvent::from_json(&bytes)
            .unwrap_or_else(|e| panic!("example does not parse: {e}\n{example:#}"));
        // Nothing in the example is silently ignored: it round-trips.
        let back = serde_json::to_value(&event).unwrap();
        assert_eq!(
            strip_nulls(back),
            strip_nulls(example.clone()),
            "example round-trips"
        );
        kinds.insert(event.kind());
    }
    let all: BTreeSet<_> = EventKind::ALL.into_iter().collect();
    assert_eq!(kinds, all, "docs/schema.md needs one example per kind");
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null() && v != &serde_json::json!([]))
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}

/// The routing-key table in docs/schema.md is what `routing_key` and
/// `previous_routing_key` give.
#[test]
fn schema_doc_routing_keys_are_what_the_code_gives() {
    use common::routing::{previous_routing_key, routing_key};
    let text = std::fs::read_to_string(docs("schema.md")).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip_while(|l| !l.starts_with("| platform | channel | routing key | previous release |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect();
    assert!(rows.len() >= 3, "docs/schema.md has the routing-key table");
    for row in rows {
        let [platform, channel, key, previous] = &row[..] else {
            panic!("a row of four cells: {row:?}");
        };
        assert_eq!(&routing_key(platform, channel), key, "{row:?}");
        let previous = if previous == "the same" {
            key
        } else {
            previous
        };
        assert_eq!(
            &previous_routing_key(platform, channel),
            previous,
            "{row:?}"
        );
    }
}
