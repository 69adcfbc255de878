//! The host filters of docs/CONTRACT.md ("Filters"): one parser of the query string for
//! `/api/v1/hosts`, `/api/v1/labels`, `/api/v1/groups` and `/api/v1/events`, and one matcher
//! over [`HostFacts`] (what a filter can look at: id, hostname, labels, status). Pure
//! functions over plain data; every refusal names the parameter.

use std::collections::{BTreeMap, HashSet};

use crate::status::Status;

/// Longest query string accepted: room for what a person types or a dashboard builds (16
/// labels of 256 bytes is 4 KiB); the event stream's `ids` get room of their own below.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Longest query string when it carries `ids` (event streams only): 500 ids of 32 hex plus
/// commas, plus the filter bound.
pub const MAX_QUERY_WITH_IDS_BYTES: usize = MAX_QUERY_BYTES + MAX_IDS * 33 + 8;
/// `label` parameters per request: a host has at most 16 labels (`MAX_LABELS`), so more
/// conditions than that say nothing a person would ask.
pub const MAX_LABEL_PARAMS: usize = 16;
/// Bytes of one `label` parameter (decoded): a name (64) and a value (128) with room.
pub const MAX_LABEL_PARAM_BYTES: usize = 256;
/// Bytes of `q` (decoded): longer than any hostname (253) or label value (128).
pub const MAX_Q_BYTES: usize = 256;
/// Hosts one event stream may name in `ids`: a dashboard page (100, 200 compact) with room.
pub const MAX_IDS: usize = 500;
/// `limit` of /api/v1/hosts: 1..=this.
pub const MAX_LIMIT: usize = 10_000;

/// A refused query: the message names the parameter (`{"error": "..."}`, 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("query string: longer than {max} bytes")]
    QueryTooLong { max: usize },
    #[error("query string: bad percent-encoding")]
    BadEncoding,
    #[error("parameter {0}: unknown here")]
    Unknown(String),
    #[error("parameter \"{name}\": {reason}")]
    Bad { name: &'static str, reason: String },
}

/// Text from the query as an error message shows it: quoted, at most [`SHOWN_CHARS`].
fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

/// Characters of a refused input an error message repeats: enough to recognise it, never a
/// 16 KB echo.
const SHOWN_CHARS: usize = 40;

fn bad(name: &'static str, reason: impl Into<String>) -> FilterError {
    FilterError::Bad {
        name,
        reason: reason.into(),
    }
}

/// One `label` condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelMatch {
    /// `NAME=VALUE`: has the label with this value.
    Eq(String, String),
    /// `NAME!=VALUE`: does not have NAME=VALUE (hosts without NAME match, as in PromQL).
    Ne(String, String),
    /// `NAME`: has the label.
    Has(String),
    /// `!NAME`: lacks the label.
    Lacks(String),
}

/// What a filter looks at, taken once from a record (the watcher, the hosts cache and the
/// fleet-wide endpoints all build these).
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub id: String,
    pub hostname: String,
    /// Sorted by name (the table keeps them so).
    pub labels: Vec<(String, String)>,
    pub status: Status,
    /// For a group's busiest host.
    pub cpu_percent: f32,
    /// Hostname, id and label values, lowercased, each followed by `\0` (`q` never holds one).
    lower: String,
}

impl HostFacts {
    pub fn new(
        id: String,
        hostname: String,
        labels: Vec<(String, String)>,
        status: Status,
        cpu_percent: f32,
    ) -> HostFacts {
        let mut lower = String::with_capacity(hostname.len() + id.len() + 64);
        for s in [hostname.as_str(), id.as_str()]
            .into_iter()
            .chain(labels.iter().map(|(_, v)| v.as_str()))
        {
            lower.push_str(&s.to_lowercase());
            lower.push('\0');
        }
        HostFacts {
            id,
            hostname,
            labels,
            status,
            cpu_percent,
            lower,
        }
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The conditions every filtered endpoint shares (`label`, `q`, `status`); all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub labels: Vec<LabelMatch>,
    /// Lowercased.
    pub q: Option<String>,
    /// Bit per [`Status`] ([`status_bit`]); 0 = any.
    pub status: u8,
}

fn status_bit(s: Status) -> u8 {
    match s {
        Status::Up => 1,
        Status::Stale => 2,
        Status::Down => 4,
        Status::Stopped => 8,
    }
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.q.is_none() && self.status == 0
    }

    pub fn matches(&self, h: &HostFacts) -> bool {
        (self.status == 0 || self.status & status_bit(h.status) != 0)
            && self.labels.iter().all(|m| match m {
                LabelMatch::Eq(n, v) => h.label(n) == Some(v.as_str()),
                LabelMatch::Ne(n, v) => h.label(n) != Some(v.as_str()),
                LabelMatch::Has(n) => h.label(n).is_some(),
                LabelMatch::Lacks(n) => h.label(n).is_none(),
            })
            && self.q.as_deref().is_none_or(|q| {
                // Within one field: a match never spans the `\0` after a field.
                h.lower.split_terminator('\0').any(|f| f.contains(q))
            })
    }
}

/// Which endpoint a query is for: each takes the shared filter plus its own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For {
    Hosts,
    Labels,
    Groups,
    Events,
}

/// A parsed query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Filter,
    /// /api/v1/hosts: page size and start.
    pub limit: Option<usize>,
    pub offset: usize,
    /// /api/v1/groups: `by`; /api/v1/events: `group_by`.
    pub by: Option<String>,
    /// /api/v1/events: only these hosts.
    pub ids: Option<HashSet<String>>,
}

/// Decodes one application/x-www-form-urlencoded component (`+` is a space, `%XX` a byte);
/// the result must be UTF-8.
pub fn form_decode(s: &str) -> Result<String, FilterError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(FilterError::BadEncoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| FilterError::BadEncoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| FilterError::BadEncoding)?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FilterError::BadEncoding)
}

fn label_name(param: &'static str, n: &str) -> Result<String, FilterError> {
    // The label-name syntax of the protocol (a filter on a name no host can have, such as a
    // reserved one, is not an error: it matches what such a host would).
    if sentinel_protocol::labels::is_label_name(n) {
        Ok(n.to_owned())
    } else {
        Err(bad(
            param,
            format!("label name {} must match [a-zA-Z_][a-zA-Z0-9_]*", shown(n)),
        ))
    }
}

fn label_value(v: &str) -> Result<String, FilterError> {
    if v.is_empty() {
        return Err(bad(
            "label",
            "empty value (write label=NAME to ask for the name)",
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(bad("label", "value has control characters"));
    }
    Ok(v.to_owned())
}

/// One `label` parameter: `NAME=VALUE`, `NAME!=VALUE`, `NAME` or `!NAME`.
pub fn parse_label(s: &str) -> Result<LabelMatch, FilterError> {
    if s.len() > MAX_LABEL_PARAM_BYTES {
        return Err(bad(
            "label",
            format!("longer than {MAX_LABEL_PARAM_BYTES} bytes"),
        ));
    }
    if let Some(n) = s.strip_prefix('!') {
        return Ok(LabelMatch::Lacks(label_name("label", n)?));
    }
    match s.split_once('=') {
        None => Ok(LabelMatch::Has(label_name("label", s)?)),
        Some((n, v)) => match n.strip_suffix('!') {
            Some(n) => Ok(LabelMatch::Ne(label_name("label", n)?, label_value(v)?)),
            None => Ok(LabelMatch::Eq(label_name("label", n)?, label_value(v)?)),
        },
    }
}

fn parse_status(s: &str, into: &mut u8) -> Result<(), FilterError> {
    for word in s.split(',') {
        *into |= match word {
            "up" => status_bit(Status::Up),
            "stale" => status_bit(Status::Stale),
            "down" => status_bit(Status::Down),
            "stopped" => status_bit(Status::Stopped),
            _ => {
                return Err(bad(
                    "status",
                    format!("unknown status {} (up, stale, down, stopped)", shown(word)),
                ))
            }
        };
    }
    Ok(())
}

fn parse_number(name: &'static str, v: &str) -> Result<usize, FilterError> {
    v.parse::<usize>()
        .map_err(|_| bad(name, "not a whole number"))
}

/// Parses a query string (without the `?`; `None` = no query) for endpoint `what`.
/// A parameter another endpoint takes, or none takes, is refused, so a typo is never a
/// silently ignored filter; so is a second `q`, `limit`, `offset`, `by`, `group_by` or `ids`.
pub fn parse(query: Option<&str>, what: For) -> Result<Query, FilterError> {
    let mut out = Query::default();
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(out);
    };
    let max = if what == For::Events {
        MAX_QUERY_WITH_IDS_BYTES
    } else {
        MAX_QUERY_BYTES
    };
    if query.len() > max {
        return Err(FilterError::QueryTooLong { max });
    }
    let mut seen = HashSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (form_decode(k)?, form_decode(v)?);
        let key: &'static str = match (k.as_str(), what) {
            ("label", _) => "label",
            ("q", _) => "q",
            ("status", _) => "status",
            ("limit", For::Hosts) => "limit",
            ("offset", For::Hosts) => "offset",
            ("by", For::Groups) => "by",
            ("group_by", For::Events) => "group_by",
            ("ids", For::Events) => "ids",
            _ => return Err(FilterError::Unknown(shown(&k))),
        };
        if !matches!(key, "label" | "status") && !seen.insert(key) {
            return Err(bad(key, "given twice"));
        }
        match key {
            "label" => {
                if out.filter.labels.len() == MAX_LABEL_PARAMS {
                    return Err(bad("label", format!("more than {MAX_LABEL_PARAMS}")));
                }
                let m = parse_label(&v)?;
                out.filter.labels.push(m);
            }
            "q" => {
                if v.len() > MAX_Q_BYTES {
                    return Err(bad("q", format!("longer than {MAX_Q_BYTES} bytes")));
                }
                if v.chars().any(char::is_control) {
                    return Err(bad("q", "has control characters"));
                }
                // An empty q asks for nothing: every host matches.
                out.filter.q = (!v.is_empty()).then(|| v.to_lowercase());
            }
            "status" => parse_status(&v, &mut out.filter.status)?,
            "limit" => {
                let n = parse_number("limit", &v)?;
                if !(1..=MAX_LIMIT).contains(&n) {
                    return Err(bad("limit", format!("must be 1..={MAX_LIMIT}")));
                }
                out.limit = Some(n);
            }
            "offset" => out.offset = parse_number("offset", &v)?,
            "by" | "group_by" => out.by = Some(label_name(key, &v)?),
            _ => {
                // ids
                let mut ids = HashSet::new();
                for id in v.split(',').filter(|id| !id.is_empty()) {
                    if !sentinel_protocol::is_valid_agent_id(id) {
                        return Err(bad("ids", format!("{} is not 32 lowercase hex", shown(id))));
                    }
                    if ids.len() == MAX_IDS {
                        return Err(bad("ids", format!("more than {MAX_IDS}")));
                    }
                    ids.insert(id.to_owned());
                }
                out.ids = Some(ids);
            }
        }
    }
    // One canonical form: the same conditions in any order are the same filter (the event
    // stream shares group summaries between clients by it).
    out.filter.labels.sort();
    out.filter.labels.dedup();
    Ok(out)
}

/// `/api/v1/labels`: every label name of the matching hosts with its values and counts.
pub fn labels_json<'a>(
    hosts: impl Iterator<Item = &'a HostFacts>,
    filter: &Filter,
) -> serde_json::Value {
    let mut names: BTreeMap<&str, (usize, BTreeMap<&str, usize>)> = BTreeMap::new();
    for h in hosts.filter(|h| filter.matches(h)) {
        for (n, v) in &h.labels {
            let e = names.entry(n).or_default();
            e.0 += 1;
            *e.1.entry(v).or_default() += 1;
        }
    }
    let labels: Vec<serde_json::Value> = names
        .into_iter()
        .map(|(name, (hosts, values))| {
            let truncated = values.len() > MAX_VALUES_LISTED;
            let values: Vec<_> = values
                .into_iter()
                .take(MAX_VALUES_LISTED)
                .map(|(value, hosts)| serde_json::json!({"value": value, "hosts": hosts}))
                .collect();
            let mut o = serde_json::json!({"name": name, "hosts": hosts, "values": values});
            if truncated {
                o["truncated"] = true.into();
            }
            o
        })
        .collect();
    serde_json::json!({ "labels": labels })
}

/// Values listed per name by /api/v1/labels: a label with more (an id-like value) is not
/// something to pick from a list, and 10,000 of them would be most of the response.
pub const MAX_VALUES_LISTED: usize = 1000;

#[derive(Default)]
struct Counts {
    hosts: usize,
    by_status: [usize; 4],
}

impl Counts {
    fn add(&mut self, s: Status) {
        self.hosts += 1;
        self.by_status[s as usize] += 1;
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("hosts".into(), self.hosts.into());
        for s in [Status::Up, Status::Stale, Status::Down, Status::Stopped] {
            m.insert(s.as_str().into(), self.by_status[s as usize].into());
        }
        m
    }
}

/// Whether `a` is busier than `b`: higher CPU; a tie goes to the first by (hostname, id).
/// A host with no finite CPU figure is never the busiest.
fn busier(a: &HostFacts, b: &HostFacts) -> bool {
    match a.cpu_percent.partial_cmp(&b.cpu_percent) {
        Some(std::cmp::Ordering::Greater) => true,
        Some(std::cmp::Ordering::Equal) => (&a.hostname, &a.id) < (&b.hostname, &b.id),
        _ => false,
    }
}

/// `/api/v1/groups?by=NAME` (and the event stream's `groups` event): the matching hosts'
/// counts by status in total and per value of NAME (sorted; hosts lacking NAME last, as
/// `"value": null`), each group with its busiest host. `by` absent: only `total`.
pub fn groups_json<'a>(
    hosts: impl Iterator<Item = &'a HostFacts>,
    filter: &Filter,
    by: Option<&str>,
) -> serde_json::Value {
    let mut total = Counts::default();
    let mut groups: BTreeMap<Option<&str>, (Counts, Option<&HostFacts>)> = BTreeMap::new();
    for h in hosts.filter(|h| filter.matches(h)) {
        total.add(h.status);
        let Some(by) = by else { continue };
        let g = groups.entry(h.label(by)).or_default();
        g.0.add(h.status);
        if h.cpu_percent.is_finite() && g.1.is_none_or(|b| busier(h, b)) {
            g.1 = Some(h);
        }
    }
    let mut out = serde_json::Map::new();
    if let Some(by) = by {
        out.insert("by".into(), by.into());
    }
    out.insert("total".into(), total.json().into());
    if by.is_some() {
        // None sorts first in a BTreeMap: listed last instead.
        let (none, some): (Vec<_>, Vec<_>) = groups.into_iter().partition(|(v, _)| v.is_none());
        let list: Vec<serde_json::Value> = some
            .into_iter()
            .chain(none)
            .map(|(value, (counts, busiest))| {
                let mut m = counts.json();
                m.insert("value".into(), value.into());
                m.insert(
                    "busiest".into(),
                    busiest.map_or(serde_json::Value::Null, |b| {
                        serde_json::json!({
                            "id": b.id,
                            "hostname": b.hostname,
                            "cpu_percent": super::api::num(b.cpu_percent),
                        })
                    }),
                );
                m.into()
            })
            .collect();
        out.insert("groups".into(), list.into());
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(name: &str, labels: &[(&str, &str)], status: Status, cpu: f32) -> HostFacts {
        let id = format!("{:0>32}", hex::encode(name.as_bytes()))[..32].to_owned();
        HostFacts::new(
            id,
            name.into(),
            labels
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
            status,
            cpu,
        )
    }

    fn fleet() -> Vec<HostFacts> {
        vec![
            host("db-1", &[("dc", "eu1"), ("role", "db")], Status::Up, 50.0),
            host("db-2", &[("dc", "us1"), ("role", "db")], Status::Down, 90.0),
            host(
                "web-1",
                &[("dc", "eu1"), ("role", "web")],
                Status::Stale,
                10.0,
            ),
            host("Lonely", &[], Status::Stopped, f32::NAN),
        ]
    }

    fn names(q: &str) -> Vec<String> {
        let query = parse(Some(q), For::Hosts).unwrap();
        fleet()
            .into_iter()
            .filter(|h| query.filter.matches(h))
            .map(|h| h.hostname)
            .collect()
    }

    #[test]
    fn every_filter_form_selects_exactly_its_hosts() {
        for (q, want) in [
            ("", &["db-1", "db-2", "web-1", "Lonely"][..]),
            ("label=role=db", &["db-1", "db-2"]),
            ("label=role%3Ddb", &["db-1", "db-2"]),
            ("label=role!=db", &["web-1", "Lonely"]),
            ("label=role", &["db-1", "db-2", "web-1"]),
            ("label=!role", &["Lonely"]),
            ("label=role=db&label=dc=eu1", &["db-1"]),
            ("label=dc=eu1&label=role!=db", &["web-1"]),
            ("q=DB", &["db-1", "db-2"]),
            ("q=lone", &["Lonely"]),
            ("q=us", &["db-2"]),
            ("q=6462", &["db-1", "db-2"]),
            ("q=eu1+", &[]),
            ("status=down", &["db-2"]),
            ("status=up,stopped", &["db-1", "Lonely"]),
            ("status=up&status=stale", &["db-1", "web-1"]),
            ("status=up,down&label=dc=eu1&q=db", &["db-1"]),
            ("q=", &["db-1", "db-2", "web-1", "Lonely"]),
        ] {
            assert_eq!(names(q), want, "{q}");
        }
    }

    #[test]
    fn q_is_case_insensitive_in_unicode_and_never_spans_two_fields() {
        let h = host("ÉCOLE-1", &[("site", "Zürich")], Status::Up, 1.0);
        let m = |q: &str| {
            parse(Some(&format!("q={q}")), For::Hosts)
                .unwrap()
                .filter
                .matches(&h)
        };
        assert!(m("%C3%A9cole") && m("Z%C3%9CRICH"));
        // hostname + id would be "école-1" + "c389..." : no match across the boundary.
        assert!(!m("1c3"));
    }

    #[test]
    fn bad_queries_are_refused_naming_the_parameter() {
        let long_label = format!("label={}", "a".repeat(MAX_LABEL_PARAM_BYTES + 1));
        let many_labels = vec!["label=a"; MAX_LABEL_PARAMS + 1].join("&");
        let long_q = format!("q={}", "a".repeat(MAX_Q_BYTES + 1));
        let long_query = format!("q=a&{}", "&".repeat(MAX_QUERY_BYTES));
        let ids = |n: usize| {
            format!(
                "ids={}",
                (0..n)
                    .map(|i| format!("{i:032x}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let (ids_ok, ids_many) = (ids(MAX_IDS), ids(MAX_IDS + 1));
        assert!(parse(Some(&ids_ok), For::Events).is_ok());
        for (q, what, needle) in [
            (long_label.as_str(), For::Hosts, "\"label\": longer"),
            (&many_labels, For::Hosts, "\"label\": more than 16"),
            (&long_q, For::Hosts, "\"q\": longer"),
            (&long_query, For::Hosts, "query string: longer"),
            (
                "label=Host-1=x",
                For::Hosts,
                "\"label\": label name \"Host-1\"",
            ),
            ("label=1a", For::Hosts, "\"label\": label name"),
            ("label=", For::Hosts, "\"label\": label name \"\""),
            ("label=!", For::Hosts, "\"label\": label name"),
            ("label=a=", For::Hosts, "\"label\": empty value"),
            ("label=a!=", For::Hosts, "\"label\": empty value"),
            ("label=a=%01", For::Hosts, "\"label\": value has control"),
            ("q=%00", For::Hosts, "\"q\": has control"),
            (
                "status=sleeping",
                For::Hosts,
                "\"status\": unknown status \"sleeping\"",
            ),
            ("status=", For::Hosts, "\"status\": unknown status \"\""),
            ("status=up,", For::Hosts, "\"status\""),
            ("limit=0", For::Hosts, "\"limit\": must be 1..=10000"),
            ("limit=10001", For::Hosts, "\"limit\""),
            ("limit=-1", For::Hosts, "\"limit\": not a whole number"),
            ("offset=x", For::Hosts, "\"offset\""),
            ("limit=1&limit=2", For::Hosts, "\"limit\": given twice"),
            ("q=a&q=b", For::Hosts, "\"q\": given twice"),
            ("limit=5", For::Events, "\"limit\": unknown here"),
            ("ids=abc", For::Events, "\"ids\": \"abc\" is not 32"),
            (
                "ids=ABABABABABABABABABABABABABABABAB",
                For::Events,
                "\"ids\"",
            ),
            (&ids_many, For::Events, "\"ids\": more than 500"),
            ("ids=", For::Hosts, "\"ids\": unknown here"),
            ("by=a-b", For::Groups, "\"by\": label name"),
            ("group_by=", For::Events, "\"group_by\": label name"),
            ("lable=a", For::Hosts, "\"lable\": unknown here"),
            ("q=%zz", For::Hosts, "bad percent-encoding"),
            ("q=%e9", For::Hosts, "bad percent-encoding"),
            ("q=%4", For::Hosts, "bad percent-encoding"),
        ] {
            let e = parse(Some(q), what).expect_err(q).to_string();
            assert!(e.contains(needle), "{q}: {e}");
        }
    }

    #[test]
    fn paging_and_endpoint_parameters_parse() {
        let q = parse(
            Some("limit=10&offset=20&label=b&label=a&label=b"),
            For::Hosts,
        )
        .unwrap();
        assert_eq!((q.limit, q.offset), (Some(10), 20));
        assert_eq!(
            q.filter.labels,
            [LabelMatch::Has("a".into()), LabelMatch::Has("b".into())]
        );
        let q = parse(Some("by=role"), For::Groups).unwrap();
        assert_eq!(q.by.as_deref(), Some("role"));
        let id = "ab".repeat(16);
        let q = parse(Some(&format!("ids={id},{id}&group_by=dc")), For::Events).unwrap();
        assert_eq!(q.ids.unwrap().len(), 1);
        assert_eq!(q.by.as_deref(), Some("dc"));
        assert_eq!(form_decode("a+b%2Bc%3d").unwrap(), "a b+c=");
    }

    #[test]
    fn labels_lists_names_and_values_with_counts_of_the_matching_hosts() {
        let f = fleet();
        assert_eq!(
            labels_json(f.iter(), &Filter::default()),
            json!({"labels": [
                {"name": "dc", "hosts": 3, "values": [{"value": "eu1", "hosts": 2}, {"value": "us1", "hosts": 1}]},
                {"name": "role", "hosts": 3, "values": [{"value": "db", "hosts": 2}, {"value": "web", "hosts": 1}]},
            ]})
        );
        let eu = parse(Some("label=dc=eu1"), For::Labels).unwrap().filter;
        assert_eq!(
            labels_json(f.iter(), &eu)["labels"][1]["values"],
            json!([{"value": "db", "hosts": 1}, {"value": "web", "hosts": 1}])
        );
        let many: Vec<HostFacts> = (0..MAX_VALUES_LISTED + 1)
            .map(|i| {
                host(
                    &format!("h{i}"),
                    &[("n", &format!("{i:05}"))],
                    Status::Up,
                    0.0,
                )
            })
            .collect();
        let v = labels_json(many.iter(), &Filter::default());
        assert_eq!(v["labels"][0]["hosts"], MAX_VALUES_LISTED + 1);
        assert_eq!(
            v["labels"][0]["values"].as_array().unwrap().len(),
            MAX_VALUES_LISTED
        );
        assert_eq!(v["labels"][0]["truncated"], true);
    }

    #[test]
    fn groups_count_by_status_with_the_busiest_host_and_lacking_hosts_last() {
        let f = fleet();
        let v = groups_json(f.iter(), &Filter::default(), Some("role"));
        assert_eq!(
            v,
            json!({
                "by": "role",
                "total": {"hosts": 4, "up": 1, "stale": 1, "down": 1, "stopped": 1},
                "groups": [
                    {"value": "db", "hosts": 2, "up": 1, "stale": 0, "down": 1, "stopped": 0,
                     "busiest": {"id": f[1].id, "hostname": "db-2", "cpu_percent": 90.0}},
                    {"value": "web", "hosts": 1, "up": 0, "stale": 1, "down": 0, "stopped": 0,
                     "busiest": {"id": f[2].id, "hostname": "web-1", "cpu_percent": 10.0}},
                    {"value": null, "hosts": 1, "up": 0, "stale": 0, "down": 0, "stopped": 1,
                     "busiest": null},
                ]
            })
        );
        let eu = parse(Some("label=dc=eu1"), For::Groups).unwrap().filter;
        assert_eq!(
            groups_json(f.iter(), &eu, None),
            json!({"total": {"hosts": 2, "up": 1, "stale": 1, "down": 0, "stopped": 0}})
        );
        // A tie in CPU goes to the first hostname.
        let tie = [
            host("b", &[("r", "x")], Status::Up, 5.0),
            host("a", &[("r", "x")], Status::Up, 5.0),
        ];
        let v = groups_json(tie.iter(), &Filter::default(), Some("r"));
        assert_eq!(v["groups"][0]["busiest"]["hostname"], "a");
    }
}
