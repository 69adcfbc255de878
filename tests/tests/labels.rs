//! Host labels (issue 13, core): from agent.toml and `--label` to the hello, through the
//! master's `[[host_labels]]`, into the table, its snapshot and every API host object; and
//! the hello's label limits, each refused `invalid` naming the label. Real masters, agents
//! and raw peers through the shared harness.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sentinel_tests::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// The agent's host object once it shows `labels`, from /api/v1/hosts.
fn host_with_labels(m: &Master, hostname: &str, labels: &Value) -> Value {
    wait_for(WAIT, &format!("{hostname} with labels {labels}"), || {
        m.host(hostname).filter(|h| &h["labels"] == labels)
    })
}

fn agent_with(m: &Master, hostname: &str, config: &str, args: &[&str]) -> Agent {
    Agent::start_opts(
        m.listen,
        &m.token_file,
        hostname,
        "200ms",
        &AgentOpts {
            config: config.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..AgentOpts::default()
        },
    )
}

#[test]
fn labels_from_agent_toml_and_flags_appear_in_every_host_object() {
    let m = Master::start();
    m.wait_healthy(WAIT);
    let _a = agent_with(
        &m,
        "labelled",
        "labels = { role = \"db\", dc = \"eu1\" }\n",
        &["--label", "role=primary", "--label", "team=storage"],
    );
    let _b = Agent::start(&m, "plain", "200ms");
    // The flag overrides the file's value of the same key; keys come sorted.
    let want = json!({"dc": "eu1", "role": "primary", "team": "storage"});
    let host = host_with_labels(&m, "labelled", &want);
    let keys: Vec<&String> = host["labels"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["dc", "role", "team"]);
    // A host without labels has an empty object, never a missing key or null.
    host_with_labels(&m, "plain", &json!({}));
    let id = host["id"].as_str().unwrap();
    let detail = m.host_detail(id).expect("host detail");
    assert_eq!(detail["labels"], want);
    // The event stream's fleet rows carry them too (the snapshot and later `hosts` events).
    let events = follow_events(&m);
    let row = wait_for(WAIT, "a fleet row of the labelled host", || {
        let text = events.lock().unwrap().clone();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .flat_map(|v| v["hosts"].as_array().cloned().unwrap_or_default())
            .find(|h| h["hostname"] == "labelled")
    });
    assert_eq!(row["labels"], want);
}

/// Collects an event stream's text in the background.
fn follow_events(m: &Master) -> Arc<Mutex<String>> {
    use std::io::{Read, Write};
    let text = Arc::new(Mutex::new(String::new()));
    let mut s = std::net::TcpStream::connect(m.http).unwrap();
    write!(s, "GET /api/v1/events HTTP/1.0\r\nHost: {}\r\n\r\n", m.http).unwrap();
    let out = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}
