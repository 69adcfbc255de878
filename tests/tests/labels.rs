//! Host labels (issue 13, core): from agent.toml and `--label` to the hello, through the
//! master's `[[host_labels]]`, into the table, its snapshot and every API host object; and
//! the hello's label limits, each refused `invalid` naming the label. Real masters, agents
//! and raw peers through the shared harness.

use std::time::Duration;

use sentinel_protocol::{AgentMessage, MasterMessage};
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
    let events = EventStream::open(&m, "");
    let row = wait_for(WAIT, "a fleet row of the labelled host", || {
        events
            .all()
            .into_iter()
            .filter(|(name, _)| name == "snapshot" || name == "hosts")
            .flat_map(|(_, d)| d["hosts"].as_array().cloned().unwrap_or_default())
            .find(|h| h["hostname"] == "labelled")
    });
    assert_eq!(row["labels"], want);
}

fn labels_of(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Value::from(*v)))
            .collect(),
    )
}

/// A raw peer that says hello with `labels` and, if welcomed, stores sample 1.
fn peer_with_labels(
    m: &Master,
    id: &str,
    hostname: &str,
    run: u64,
    labels: &[(&str, &str)],
) -> (Peer, MasterMessage) {
    let mut p = Peer::connect(m.listen);
    let answer = p
        .handshake(&test_hello_with_labels(id, hostname, run, labels), TOKEN)
        .expect("an answer to the hello");
    if matches!(answer, MasterMessage::Welcome(_)) {
        assert!(p.send(&AgentMessage::Sample(test_sample(1))));
        assert!(matches!(p.read(), Some(MasterMessage::Ack(_))));
    }
    (p, answer)
}

const HOST_LABELS: &str =
    "[[host_labels]]\nhostname = \"*\"\nlabels = { dc = \"eu1\", tier = \"any\" }\n\n\
[[host_labels]]\nhostname = \"db-[0-9]*\"\nlabels = { role = \"database\", tier = \"gold\" }\n\n\
[[host_labels]]\nhostname = \"web-?\"\nlabels = { role = \"web\" }\n";

#[test]
fn master_host_labels_add_to_and_override_the_agents_labels_in_file_order() {
    let m = Master::start_with_config(HOST_LABELS, &[]);
    let _db = agent_with(
        &m,
        "db-1",
        "labels = { role = \"db\", team = \"storage\" }\n",
        &[],
    );
    let _web = agent_with(&m, "web-7", "", &["--label", "dc=us2"]);
    let _other = Agent::start(&m, "cache-1", "200ms");
    // Every matching table applies in file order, over the agent's own labels.
    host_with_labels(
        &m,
        "db-1",
        &labels_of(&[
            ("dc", "eu1"),
            ("role", "database"),
            ("team", "storage"),
            ("tier", "gold"),
        ]),
    );
    host_with_labels(
        &m,
        "web-7",
        &labels_of(&[("dc", "eu1"), ("role", "web"), ("tier", "any")]),
    );
    host_with_labels(&m, "cache-1", &labels_of(&[("dc", "eu1"), ("tier", "any")]));
    // 15 labels from the agent + 2 new from the master = 17 > 16: refused, naming the count;
    // the same 15 under a hostname only `*` matches... still 17 (dc and tier are new).
    let many: Vec<(String, String)> = (0..15).map(|i| (format!("l{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (_p, answer) = peer_with_labels(&m, &format!("{:032x}", 0xbeef), "cache-2", 1, &many);
    match answer {
        MasterMessage::Refused(r) => {
            assert_eq!(r.code, "invalid");
            assert!(
                r.reason.contains("[[host_labels]]")
                    && r.reason.contains("17 labels, the limit is 16"),
                "{}",
                r.reason
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // 14 + 2 = 16 is fine.
    let (_q, answer) = peer_with_labels(&m, &format!("{:032x}", 0xbeee), "cache-3", 1, &many[..14]);
    assert!(matches!(answer, MasterMessage::Welcome(_)), "{answer:?}");
}

#[test]
fn a_label_change_takes_effect_at_the_agents_next_hello_and_survives_a_master_restart() {
    let mut m = Master::start();
    m.wait_healthy(WAIT);
    let mut first = agent_with(
        &m,
        "moving",
        "labels = { role = \"db\", dc = \"eu1\" }\n",
        &[],
    );
    let before = host_with_labels(&m, "moving", &labels_of(&[("dc", "eu1"), ("role", "db")]));
    let id = before["id"].as_str().unwrap().to_string();
    // The same host (its state directory) restarted with other labels: `dc` is gone, `role`
    // changed, `rack` is new. The labels of the last hello replace the old set.
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.wait_exit(WAIT);
    let _second = Agent::start_opts_with_state_of(
        &m,
        "moving",
        "200ms",
        &AgentOpts {
            args: vec![
                "--label".into(),
                "role=web".into(),
                "--label".into(),
                "rack=r7".into(),
            ],
            ..AgentOpts::default()
        },
        &first,
    );
    let want = labels_of(&[("rack", "r7"), ("role", "web")]);
    let after = host_with_labels(&m, "moving", &want);
    assert_eq!(after["id"], id.as_str(), "the same host, not a new one");
    assert_eq!(m.hosts().unwrap().len(), 1);
    // A master restart restores them from its snapshot, before the agent says hello again.
    drop(_second);
    assert!(m.terminate().success());
    m.respawn();
    let restored = m.host_detail(&id).expect("the host after the restart");
    assert_eq!(
        restored["labels"], want,
        "labels restored from the snapshot"
    );
}

#[test]
fn hostile_labels_are_refused_invalid_naming_the_label_and_a_good_host_is_undisturbed() {
    let m = Master::start();
    m.wait_healthy(WAIT);
    let good = Agent::start(&m, "good", "200ms");
    wait_for(WAIT, "the good host up", || {
        m.host("good").filter(|h| h["status"] == "up").map(|_| ())
    });
    let refused_before = refusals(&m, "invalid");
    let seventeen: Vec<(String, String)> =
        (0..17).map(|i| (format!("l{i:02}"), "v".into())).collect();
    let seventeen: Vec<(&str, &str)> = seventeen
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let long_value = "v".repeat(129);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "reserved name",
            vec![("host", "x")],
            "label \"host\": the name is reserved",
        ),
        (
            "double underscore",
            vec![("__x", "x")],
            "label \"__x\": names starting with __ are reserved",
        ),
        (
            "leading digit",
            vec![("1abc", "x")],
            "label \"1abc\": name must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        ("dash", vec![("a-b", "x")], "label \"a-b\": name must match"),
        ("17 labels", seventeen.clone(), "17 labels, the limit is 16"),
        (
            "long value",
            vec![("role", long_value.as_str())],
            "label \"role\": value is 129 bytes long, the limit is 128",
        ),
        (
            "control char",
            vec![("role", "db\u{1b}[31m")],
            "label \"role\": value has the control character U+001B",
        ),
        (
            "empty value",
            vec![("role", "")],
            "label \"role\": value is empty",
        ),
    ];
    for (n, (case, labels, want)) in cases.iter().enumerate() {
        let id = format!("{:032x}", 0xbad0 + n);
        let (p, answer) = peer_with_labels(&m, &id, &format!("hostile-{n}"), 1, labels);
        match answer {
            MasterMessage::Refused(r) => {
                assert_eq!(r.code, "invalid", "{case}");
                assert!(r.reason.contains(want), "{case}: {}", r.reason);
            }
            other => panic!("{case}: expected a refusal, got {other:?}"),
        }
        // Logged with the peer and the reason.
        m.wait_log(
            &[
                "refused connection",
                &format!("peer={} ", p.name()),
                "invalid hello: ",
            ],
            WAIT,
        );
    }
    let refused = wait_for(WAIT, "the refusals counted", || {
        let n = refusals(&m, "invalid");
        (n >= refused_before + cases.len() as u64).then_some(n)
    });
    assert_eq!(refused, refused_before + cases.len() as u64);
    // None of them got a slot; the good host streams on, on its first connection.
    let hosts = m.hosts().unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let before = u64_field(&m.host("good").unwrap(), "last_seq");
    wait_for(WAIT, "the good host to keep streaming", || {
        let h = m.host("good")?;
        (u64_field(&h, "last_seq") > before + 2 && h["status"] == "up").then_some(())
    });
    let h = m.host("good").unwrap();
    assert_eq!(u64_field(&h, "reconnects"), 0);
    assert_sequence_complete(&h);
    assert!(!good.log_text().contains("refused"), "{}", good.log_text());
}

/// `sentinel_collector_refusals_total{code="..."}` from /metrics.
fn refusals(m: &Master, code: &str) -> u64 {
    let (_, text) = m.get("/metrics", WAIT).expect("/metrics");
    let prefix = format!("sentinel_collector_refusals_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_agent_with_a_bad_label_refuses_to_start_naming_it() {
    let m = Master::start();
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "labels = { host = \"x\" }\n",
            &[],
            "invalid labels: label \"host\": the name is reserved",
        ),
        (
            "",
            &["--label", "a-b=1"],
            "invalid --label: label \"a-b\": name must match",
        ),
        (
            "labels = { role = \"db\" }\n",
            &["--label", "role="],
            "invalid --label: label \"role\": value is empty",
        ),
    ];
    for (config, args, want) in cases {
        let mut a = agent_with(&m, "badlabel", config, args);
        let status = a.wait_exit(WAIT);
        assert_eq!(status.code(), Some(78), "EX_CONFIG for {config:?} {args:?}");
        let log = a.log_text();
        assert!(log.contains(want), "{config:?} {args:?}: {log}");
    }
    assert!(m.hosts().unwrap().is_empty());
}

#[test]
fn a_master_with_a_bad_host_labels_table_refuses_to_start_naming_the_file_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("master.toml");
    std::fs::write(
        &config,
        "[[host_labels]]\nhostname = \"*\"\nlabels = { dc = \"eu1\" }\n\n\
         [[host_labels]]\nhostname = \"db-*\"\nlabels = { instance = \"x\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("sentinel-master"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&config.display().to_string())
            && text.contains(
                "[[host_labels]] table 2 (counting from 1), key `labels`: label \"instance\""
            ),
        "{text}"
    );
}

#[test]
fn loadgen_hosts_get_labels_that_are_a_pure_function_of_their_number() {
    let m = Master::start();
    m.wait_healthy(WAIT);
    let _load = Loadgen::start(
        &m,
        &[
            "--agents",
            "6",
            "--interval",
            "1s",
            "--duration",
            "60s",
            "--id-base",
            "10",
            "--label",
            "env=test",
            "--label-cycle",
            "role=db,web,cache",
            "--label-index",
            "shard=4",
        ],
    );
    for n in 10..16u64 {
        let role = ["db", "web", "cache"][(n % 3) as usize];
        let shard = (n / 4).to_string();
        host_with_labels(
            &m,
            &format!("load-{n:05}"),
            &labels_of(&[("env", "test"), ("role", role), ("shard", &shard)]),
        );
    }
}
