//! Host filters end to end (docs/CONTRACT.md "Filters"): a few hundred simulated hosts with
//! labels that are a pure function of their index, so every expected set is computed here,
//! independently of the master, and compared with what `/api/v1/hosts`, `/api/v1/labels`,
//! `/api/v1/groups` and filtered event streams return.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sentinel_tests::{http_call, wait_for, EventStream, Loadgen, Master};
use serde_json::{json, Value};

/// Hosts of the labelled generator (`load-00000` .. `load-00299`).
const LABELLED: u64 = 300;
/// Hosts of the second generator (`load-01000` ..): only `team=core`.
const TEAM: u64 = 20;
const TEAM_BASE: u64 = 1000;
const ROLES: [&str; 3] = ["db", "web", "cache"];
const DCS: [&str; 2] = ["eu1", "us1"];
/// `--label-index shard=50`: shards of 50 hosts.
const SHARD: u64 = 50;

fn labelled_args() -> Vec<String> {
    [
        "--agents",
        &LABELLED.to_string(),
        "--interval",
        "1s",
        "--duration",
        "600s",
        "--label-cycle",
        &format!("role={}", ROLES.join(",")),
        "--label-cycle",
        &format!("dc={}", DCS.join(",")),
        "--label-index",
        &format!("shard={SHARD}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn team_gen(master: &Master, team: &str) -> Loadgen {
    Loadgen::start(
        master,
        &[
            "--agents",
            &TEAM.to_string(),
            "--id-base",
            &TEAM_BASE.to_string(),
            "--interval",
            "1s",
            "--duration",
            "600s",
            "--label",
            &format!("team={team}"),
        ],
    )
}

/// One simulated host as the test knows it: hostname and labels from its index alone.
#[derive(Debug, Clone)]
struct Known {
    hostname: String,
    labels: BTreeMap<String, String>,
}

fn known_hosts() -> Vec<Known> {
    let mut out: Vec<Known> = (0..LABELLED)
        .map(|i| Known {
            hostname: format!("load-{i:05}"),
            labels: BTreeMap::from([
                ("role".into(), ROLES[(i % 3) as usize].into()),
                ("dc".into(), DCS[(i % 2) as usize].into()),
                ("shard".into(), (i / SHARD).to_string()),
            ]),
        })
        .collect();
    out.extend((0..TEAM).map(|i| Known {
        hostname: format!("load-{:05}", TEAM_BASE + i),
        labels: BTreeMap::from([("team".into(), "core".into())]),
    }));
    out
}

/// `GET path`: status, the X-Total-Count header, the body as JSON.
fn get(master: &Master, path: &str) -> (u16, Option<usize>, Value) {
    let (status, head, body) = http_call(master.http, "GET", path, "").expect(path);
    let total = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-total-count")
            .then(|| v.trim().parse().ok())?
    });
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, total, v)
}

fn hostnames(v: &Value) -> Vec<String> {
    v["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["hostname"].as_str().unwrap().to_owned())
        .collect()
}

/// A master with both generators' hosts all in the table, up, with their labels.
fn fleet() -> (Master, Loadgen, Loadgen, BTreeMap<String, String>) {
    // Every simulated host connects from 127.0.0.1: no admission throttle.
    let master = Master::start_with(&["--new-hosts-per-minute", "0"]);
    let args = labelled_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Loadgen::start(&master, &args);
    let b = team_gen(&master, "core");
    let want = (LABELLED + TEAM) as usize;
    let ids = wait_for(Duration::from_secs(30), "every simulated host up", || {
        let hosts = master.json("/api/v1/hosts")?["hosts"].as_array()?.clone();
        (hosts.len() == want && hosts.iter().all(|h| h["status"] == "up")).then(|| {
            hosts
                .iter()
                .map(|h| {
                    (
                        h["hostname"].as_str().unwrap().to_owned(),
                        h["id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        })
    });
    (master, a, b, ids)
}

/// The hostnames (sorted, as the API orders them) of the known hosts that `keep` selects.
fn expected(keep: impl Fn(&Known) -> bool) -> Vec<String> {
    let mut v: Vec<String> = known_hosts()
        .into_iter()
        .filter(|k| keep(k))
        .map(|k| k.hostname)
        .collect();
    v.sort();
    v
}

fn label<'a>(k: &'a Known, name: &str) -> Option<&'a str> {
    k.labels.get(name).map(String::as_str)
}

#[test]
fn every_filter_form_returns_exactly_the_matching_hosts_with_exact_label_and_group_counts() {
    let (master, _a, _b, ids) = fleet();
    // Every host carries exactly its labels.
    let (_, _, all) = get(&master, "/api/v1/hosts");
    for h in all["hosts"].as_array().unwrap() {
        let k = known_hosts()
            .into_iter()
            .find(|k| k.hostname == h["hostname"])
            .unwrap();
        assert_eq!(h["labels"], json!(k.labels), "{}", k.hostname);
    }
    let id_of = |hostname: &str| ids[hostname].clone();
    let some_id = id_of("load-00042");
    let id_part = &some_id[24..];
    type Case<'a> = (&'a str, Box<dyn Fn(&Known) -> bool + 'a>);
    let cases: Vec<Case> = vec![
        ("", Box::new(|_| true)),
        (
            "label=role=db",
            Box::new(|k| label(k, "role") == Some("db")),
        ),
        (
            "label=role%3Dweb",
            Box::new(|k| label(k, "role") == Some("web")),
        ),
        (
            "label=role!=db",
            Box::new(|k| label(k, "role") != Some("db")),
        ),
        ("label=team", Box::new(|k| label(k, "team").is_some())),
        ("label=!role", Box::new(|k| label(k, "role").is_none())),
        (
            "label=role=cache&label=dc=us1&label=shard=3",
            Box::new(|k| {
                label(k, "role") == Some("cache")
                    && label(k, "dc") == Some("us1")
                    && label(k, "shard") == Some("3")
            }),
        ),
        (
            "label=dc=eu1&label=role!=web&label=!team",
            Box::new(|k| label(k, "dc") == Some("eu1") && label(k, "role") != Some("web")),
        ),
        ("label=nosuch", Box::new(|_| false)),
        ("label=role=DB", Box::new(|_| false)),
        // q: a hostname substring, a label value, case-insensitive, an id substring.
        (
            "q=load-0012",
            Box::new(|k| k.hostname.contains("load-0012")),
        ),
        (
            "q=CACH",
            Box::new(|k| k.labels.values().any(|v| v.contains("cach"))),
        ),
        (
            "q=Eu",
            Box::new(|k| k.labels.values().any(|v| v.contains("eu"))),
        ),
        (
            "q=cOrE",
            Box::new(|k| k.labels.values().any(|v| v.contains("core"))),
        ),
        ("status=up", Box::new(|_| true)),
        ("status=down,stale,stopped", Box::new(|_| false)),
        (
            "status=up,down&label=role=web&q=load-001",
            Box::new(|k| label(k, "role") == Some("web") && k.hostname.contains("load-001")),
        ),
    ];
    for (query, keep) in &cases {
        let path = format!("/api/v1/hosts?{query}");
        let (status, total, v) = get(&master, &path);
        assert_eq!(status, 200, "{path}");
        let want = expected(keep);
        assert_eq!(hostnames(&v), want, "{path}");
        assert_eq!(total, Some(want.len()), "{path}: X-Total-Count");
    }
    let (_, _, v) = get(&master, &format!("/api/v1/hosts?q={id_part}"));
    let want: Vec<String> = ids
        .iter()
        .filter(|(h, id)| id.contains(id_part) || h.contains(id_part))
        .map(|(h, _)| h.clone())
        .collect();
    assert!(want.contains(&"load-00042".to_owned()));
    assert_eq!(hostnames(&v), want, "q on the id");

    // Paging: the pages of a filter, in order, are exactly the filtered list.
    let dbs = expected(|k| label(k, "role") == Some("db"));
    let mut paged = Vec::new();
    for offset in (0..dbs.len() + 30).step_by(30) {
        let (status, total, v) = get(
            &master,
            &format!("/api/v1/hosts?label=role=db&limit=30&offset={offset}"),
        );
        assert_eq!((status, total), (200, Some(dbs.len())));
        assert!(hostnames(&v).len() <= 30);
        paged.extend(hostnames(&v));
    }
    assert_eq!(paged, dbs);

    // /api/v1/labels: every name with its values and host counts, computed from the indexes.
    let mut want: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for k in known_hosts() {
        for (n, v) in &k.labels {
            *want
                .entry(n.clone())
                .or_default()
                .entry(v.clone())
                .or_default() += 1;
        }
    }
    let want_json = |want: &BTreeMap<String, BTreeMap<String, usize>>| {
        let mut names: Vec<Value> = Vec::new();
        for (n, values) in want {
            let list: Vec<Value> = values
                .iter()
                .map(|(v, c)| json!({"value": v, "hosts": c}))
                .collect();
            names.push(json!({"name": n, "hosts": values.values().sum::<usize>(), "values": list}));
        }
        json!({ "labels": names })
    };
    let (status, _, v) = get(&master, "/api/v1/labels");
    assert_eq!((status, &v), (200, &want_json(&want)));
    // Filtered: only the hosts of shard 2 counted.
    let mut shard2: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for k in known_hosts()
        .iter()
        .filter(|k| label(k, "shard") == Some("2"))
    {
        for (n, v) in &k.labels {
            *shard2
                .entry(n.clone())
                .or_default()
                .entry(v.clone())
                .or_default() += 1;
        }
    }
    let (_, _, v) = get(&master, "/api/v1/labels?label=shard=2");
    assert_eq!(v, want_json(&shard2));

    // /api/v1/groups: counts per role (team hosts lack it: the null group, last) and the
    // busiest host of each group is the one with the highest CPU among that group.
    let (status, _, v) = get(&master, "/api/v1/groups?by=role");
    assert_eq!(status, 200);
    assert_eq!(v["by"], "role");
    let n = (LABELLED + TEAM) as usize;
    assert_eq!(
        v["total"],
        json!({"hosts": n, "up": n, "stale": 0, "down": 0, "stopped": 0})
    );
    let groups = v["groups"].as_array().unwrap();
    let values: Vec<&Value> = groups.iter().map(|g| &g["value"]).collect();
    assert_eq!(
        values,
        [&json!("cache"), &json!("db"), &json!("web"), &Value::Null]
    );
    for g in groups {
        let members = expected(|k| label(k, "role") == g["value"].as_str());
        assert_eq!(g["hosts"], members.len(), "{g}");
        assert_eq!(g["up"], members.len(), "{g}");
        let busiest = g["busiest"]["hostname"].as_str().unwrap();
        assert!(members.iter().any(|m| m == busiest), "{g}");
        assert!(g["busiest"]["cpu_percent"].is_number(), "{g}");
    }
    // Hosts lacking the name form one group, `null`.
    let (_, _, v) = get(&master, "/api/v1/groups?by=dc&label=team");
    assert_eq!(
        v["groups"],
        json!([{"value": null, "hosts": TEAM, "up": TEAM, "stale": 0, "down": 0, "stopped": 0,
                "busiest": v["groups"][0]["busiest"]}])
    );
    let (_, _, v) = get(&master, "/api/v1/groups?label=role=db");
    let dbs = expected(|k| label(k, "role") == Some("db")).len();
    assert_eq!(
        v,
        json!({"total": {"hosts": dbs, "up": dbs, "stale": 0, "down": 0, "stopped": 0}})
    );

    // Status: the team generator goes away without a goodbye; its hosts leave `up`.
    drop(_b);
    let team = expected(|k| label(k, "team").is_some());
    wait_for(
        Duration::from_secs(30),
        "the team hosts stale or down",
        || {
            let (_, _, v) = get(&master, "/api/v1/hosts?status=stale,down");
            (hostnames(&v) == team).then_some(())
        },
    );
    let (_, total, v) = get(&master, "/api/v1/hosts?status=up");
    assert_eq!(hostnames(&v), expected(|k| label(k, "team").is_none()));
    assert_eq!(total, Some(LABELLED as usize));
    let (_, _, v) = get(&master, "/api/v1/hosts?status=stopped");
    assert_eq!(hostnames(&v), Vec::<String>::new());
}

#[test]
fn a_filtered_event_stream_gets_only_its_hosts_every_update_and_a_removed_when_one_leaves() {
    let (master, _a, b, ids) = fleet();
    let ids_of =
        |names: &[String]| -> BTreeSet<String> { names.iter().map(|n| ids[n].clone()).collect() };
    // Web hosts in eu1: i % 6 == 4.
    let web_eu = ids_of(&expected(|k| {
        label(k, "role") == Some("web") && label(k, "dc") == Some("eu1")
    }));
    assert_eq!(web_eu.len(), 50);
    let team = ids_of(&expected(|k| label(k, "team").is_some()));
    // Six chosen hosts, three of them db: `ids` is still subject to the filter.
    let chosen: Vec<String> = (0..6)
        .map(|i| ids[&format!("load-{i:05}")].clone())
        .collect();
    let chosen_db: BTreeSet<String> = [0, 3]
        .iter()
        .map(|i| ids[&format!("load-{i:05}")].clone())
        .collect();

    let a = EventStream::open(&master, "label=role=web&label=dc=eu1");
    let t = EventStream::open(&master, "label=team=core&status=up&group_by=team");
    let c = EventStream::open(
        &master,
        &format!("ids={}&label=role=db&group_by=dc", chosen.join(",")),
    );
    let plain = EventStream::open(&master, "");
    wait_for(Duration::from_secs(10), "every snapshot", || {
        [&a, &t, &c, &plain]
            .iter()
            .all(|e| e.snapshot_ids().is_some())
            .then_some(())
    });
    assert_eq!(a.snapshot_ids().unwrap(), web_eu);
    assert_eq!(t.snapshot_ids().unwrap(), team);
    assert_eq!(c.snapshot_ids().unwrap(), chosen_db);
    assert_eq!(plain.snapshot_ids().unwrap().len(), ids.len());

    // Each of their hosts gets its updates (1 Hz: at least 3 in the next few seconds), and
    // nothing else ever arrives.
    let started = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "3 updates of every filtered host",
        || {
            let (ua, uc) = (a.updates(), c.updates());
            (web_eu
                .iter()
                .all(|id| ua.get(id).copied().unwrap_or(0) >= 3)
                && chosen_db
                    .iter()
                    .all(|id| uc.get(id).copied().unwrap_or(0) >= 3))
            .then_some(())
        },
    );
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(a.row_ids(), web_eu, "stream a: only its hosts");
    assert_eq!(c.row_ids(), chosen_db, "stream c: only its hosts");
    // At 1 Hz the filtered stream carries its 50 hosts' rows, a small share of the fleet's.
    let (ba, bp) = (*a.bytes.lock().unwrap(), *plain.bytes.lock().unwrap());
    assert!(
        ba * 3 < bp,
        "filtered {ba} bytes vs unfiltered {bp} in {secs:.1} s"
    );

    // `groups` for the group_by streams: exact counts.
    let groups_of = |e: &EventStream| {
        e.all()
            .into_iter()
            .rev()
            .find(|(n, _)| n == "groups")
            .map(|(_, d)| d)
    };
    let g = groups_of(&t).expect("a groups event");
    assert_eq!(
        (
            &g["by"],
            &g["total"]["hosts"],
            &g["groups"][0]["value"],
            &g["groups"][0]["hosts"]
        ),
        (&json!("team"), &json!(TEAM), &json!("core"), &json!(TEAM))
    );
    let g = groups_of(&c).expect("a groups event");
    let db_by_dc =
        |dc: &str| expected(|k| label(k, "role") == Some("db") && label(k, "dc") == Some(dc)).len();
    assert_eq!(
        (
            &g["total"]["hosts"],
            &g["groups"][0]["hosts"],
            &g["groups"][1]["hosts"]
        ),
        (
            &json!(db_by_dc("eu1") + db_by_dc("us1")),
            &json!(db_by_dc("eu1")),
            &json!(db_by_dc("us1"))
        ),
        "groups count the filter, not only the ids: {g}"
    );
    // Sent only when changed: no two consecutive equal groups events.
    let gs: Vec<Value> = t
        .all()
        .into_iter()
        .filter(|(n, _)| n == "groups")
        .map(|(_, d)| d)
        .collect();
    assert!(gs.windows(2).all(|w| w[0] != w[1]), "{gs:?}");

    // The team hosts' labels change at their next hello: they leave stream t with
    // reason "filter" (or, if the new hello came after 3 intervals, by leaving status=up;
    // also reason "filter"), and then arrive in a stream filtering on the new value.
    drop(b);
    let _b2 = team_gen(&master, "edge");
    let left = wait_for(
        Duration::from_secs(30),
        "the team hosts removed by filter",
        || {
            let gone: BTreeSet<String> = t
                .all()
                .iter()
                .filter(|(n, d)| n == "removed" && d["reason"] == "filter")
                .flat_map(|(_, d)| d["ids"].as_array().unwrap().clone())
                .map(|id| id.as_str().unwrap().to_owned())
                .collect();
            (gone == team).then_some(gone)
        },
    );
    assert_eq!(left, team);
    let edge = EventStream::open(&master, "label=team=edge");
    wait_for(
        Duration::from_secs(30),
        "the team hosts under their new label",
        || (edge.row_ids() == team).then_some(()),
    );
    // The unfiltered stream got no `reason` anywhere, and every stream is still open.
    assert!(plain.all().iter().all(|(_, d)| d.get("reason").is_none()));
    for e in [&a, &t, &c, &plain, &edge] {
        assert!(!*e.ended.lock().unwrap(), "a stream was dropped");
    }
    assert_eq!(a.row_ids(), web_eu, "stream a: still only its hosts");
}

#[test]
fn bad_filters_get_400_naming_the_parameter_and_the_master_keeps_serving() {
    let master = Master::start();
    let long = "a".repeat(257);
    let many_labels = vec!["label=a"; 17].join("&");
    let many_ids = (0..501)
        .map(|i| format!("{i:032x}"))
        .collect::<Vec<_>>()
        .join(",");
    let overlong = format!("q=a{}", "&q".repeat(2100));
    let cases: Vec<(String, &str)> = vec![
        (format!("/api/v1/hosts?label={long}"), "\"label\""),
        (
            format!("/api/v1/hosts?{many_labels}"),
            "\"label\": more than 16",
        ),
        (format!("/api/v1/hosts?q={long}"), "\"q\""),
        (format!("/api/v1/hosts?{overlong}"), "query string"),
        (
            "/api/v1/hosts?label=Host-1=x".into(),
            "\"label\": label name \"Host-1\"",
        ),
        ("/api/v1/hosts?label=a=".into(), "\"label\": empty value"),
        ("/api/v1/hosts?label=%zz".into(), "percent-encoding"),
        (
            "/api/v1/hosts?status=sleeping".into(),
            "\"status\": unknown status",
        ),
        ("/api/v1/hosts?limit=0".into(), "\"limit\""),
        ("/api/v1/hosts?limit=10001".into(), "\"limit\""),
        ("/api/v1/hosts?offset=-3".into(), "\"offset\""),
        ("/api/v1/hosts?lable=role".into(), "\"lable\": unknown"),
        ("/api/v1/labels?q=%00".into(), "\"q\""),
        ("/api/v1/groups?by=no-dash".into(), "\"by\""),
        ("/api/v1/events?ids=12345".into(), "\"ids\""),
        (
            format!("/api/v1/events?ids={many_ids}"),
            "\"ids\": more than 500",
        ),
        ("/api/v1/events?group_by=".into(), "\"group_by\""),
        ("/api/v1/events?status=up,nope".into(), "\"status\""),
    ];
    for (path, needle) in &cases {
        let (status, _, body) = http_call(master.http, "GET", path, "").unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(needle), "{path}: {e}");
        assert!(
            e.len() < 200,
            "{path}: the message does not echo the input: {e}"
        );
    }
    // Still serving.
    let v = master.wait_healthy(Duration::from_secs(5));
    assert_eq!(v["status"], "ok");
    let (status, _, _) = get(&master, "/api/v1/hosts?label=role=db&limit=10");
    assert_eq!(status, 200);
}
