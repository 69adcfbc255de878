//! master.toml `[[host_labels]]`: labels the master adds to the hosts whose hostname matches a
//! glob, so an operator can label agents they cannot reconfigure. Merge rule (docs/CONTRACT.md):
//! the agent's labels, then every matching table in file order, each overriding the labels of
//! the same name before it (the operator has the last word); the merged set is checked again
//! with [`sentinel_protocol::labels::validate`].

use std::collections::BTreeMap;

use sentinel_protocol::labels::{validate, LabelError};

/// The `[[host_labels]]` tables of master.toml, checked at load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostLabels {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    pattern: Glob,
    labels: BTreeMap<String, String>,
}

impl HostLabels {
    /// Checks every table: the glob's syntax and the table's own labels. The error names the
    /// table (counting from 1, in file order) and the key; the caller adds the file.
    pub fn new(
        tables: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
    ) -> Result<HostLabels, String> {
        let mut rules = Vec::new();
        for (i, (hostname, labels)) in tables.into_iter().enumerate() {
            let at = format!("[[host_labels]] table {} (counting from 1)", i + 1);
            let pattern = Glob::new(&hostname).map_err(|e| format!("{at}, key `hostname`: {e}"))?;
            validate(&labels).map_err(|e| format!("{at}, key `labels`: {e}"))?;
            rules.push(Rule { pattern, labels });
        }
        Ok(HostLabels { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The host's labels: `agent`'s with every matching table's over them, checked again (the
    /// sum may pass the bounds each part kept).
    pub fn apply(
        &self,
        hostname: &str,
        agent: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, LabelError> {
        let mut labels = agent;
        let mut changed = false;
        for rule in self.rules.iter().filter(|r| r.pattern.matches(hostname)) {
            labels.extend(rule.labels.iter().map(|(n, v)| (n.clone(), v.clone())));
            changed = true;
        }
        if changed {
            validate(&labels)?;
        }
        Ok(labels)
    }
}

/// A shell-style glob over a whole hostname: `*` (any run, empty too), `?` (one character),
/// `[abc]`, `[a-z]`, `[!a-z]` (one character in, or with `!` not in, the set); anything else
/// matches itself, case-sensitively. Hostnames are ASCII (PROTOCOL.md section 2), so it
/// matches bytes. A small matcher instead of a crate: the `glob` crate's `Pattern` is not in
/// the lock file, and this is all master.toml needs.
#[derive(Debug, Clone, PartialEq)]
struct Glob(Vec<Token>);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Byte(u8),
    One,
    Any,
    Set {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Glob {
    fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("the glob is empty".into());
        }
        let bytes = text.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let token = match bytes[i] {
                b'*' => Token::Any,
                b'?' => Token::One,
                b'[' => {
                    let start = i;
                    i += 1;
                    let negated = matches!(bytes.get(i), Some(b'!' | b'^'));
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    // A `]` first in the set is a member, as in the shell.
                    let mut first = true;
                    loop {
                        let Some(&b) = bytes.get(i) else {
                            return Err(format!("{text:?} has an unclosed `[` at byte {start}"));
                        };
                        if b == b']' && !first {
                            break;
                        }
                        first = false;
                        if bytes.get(i + 1) == Some(&b'-')
                            && bytes.get(i + 2).is_some_and(|&c| c != b']')
                        {
                            let hi = bytes[i + 2];
                            if hi < b {
                                return Err(format!(
                                    "{text:?} has the reversed range {}-{} at byte {i}",
                                    b as char, hi as char
                                ));
                            }
                            ranges.push((b, hi));
                            i += 3;
                        } else {
                            ranges.push((b, b));
                            i += 1;
                        }
                    }
                    Token::Set { negated, ranges }
                }
                b => Token::Byte(b),
            };
            tokens.push(token);
            i += 1;
        }
        Ok(Glob(tokens))
    }

    /// Whole-string match, linear backtracking on the last `*` only (no exponential cases).
    fn matches(&self, name: &str) -> bool {
        let (p, s) = (&self.0, name.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(Token::Any) => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                Some(t) if t.matches_byte(s[si]) => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|t| *t == Token::Any)
    }
}

impl Token {
    fn matches_byte(&self, b: u8) -> bool {
        match self {
            Token::Byte(c) => *c == b,
            Token::One => true,
            Token::Any => false,
            Token::Set { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&b)) != *negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn globs_match_whole_hostnames() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "db-*",
                &["db-1", "db-", "db-eu1.example"],
                &["xdb-1", "db", "web-1"],
            ),
            (
                "*.eu1.example",
                &["a.eu1.example"],
                &["a.eu1.example.com", "eu1.example"],
            ),
            ("web-?", &["web-1", "web-a"], &["web-10", "web-"]),
            ("web-[0-4]", &["web-0", "web-4"], &["web-5", "web-a"]),
            ("web-[!0-4]", &["web-5", "web-a"], &["web-0", "web-"]),
            ("[]a]x", &["]x", "ax"], &["bx"]),
            ("*-*-*", &["a-b-c", "--"], &["a-b"]),
            ("exact", &["exact"], &["Exact", "exact1"]),
            ("*", &["anything", "a"], &[]),
            ("a*b*c*d", &["abcd", "aXbXcXd"], &["abdc"]),
        ];
        for (glob, yes, no) in cases {
            let g = Glob::new(glob).unwrap();
            for h in *yes {
                assert!(g.matches(h), "{glob} should match {h}");
            }
            for h in *no {
                assert!(!g.matches(h), "{glob} should not match {h}");
            }
        }
        // Pathological patterns stay linear-ish (this would take ages with naive recursion).
        let g = Glob::new(&"*a".repeat(30)).unwrap();
        assert!(!g.matches(&"a".repeat(29)));
    }

    #[test]
    fn bad_tables_are_refused_naming_the_table_and_the_key() {
        let cases = [
            (
                ("db-[0-9", set(&[("role", "db")])),
                "table 1 (counting from 1), key `hostname`: \"db-[0-9\" has an unclosed `[`",
            ),
            (("", set(&[])), "key `hostname`: the glob is empty"),
            (("db-[9-0]", set(&[])), "reversed range"),
            (
                ("db-*", set(&[("host", "x")])),
                "table 1 (counting from 1), key `labels`: label \"host\": the name is reserved",
            ),
        ];
        for ((glob, labels), want) in cases {
            let err = HostLabels::new([(glob.to_string(), labels)]).unwrap_err();
            assert!(err.contains(want), "{glob}: {err}");
        }
        let ok = ("*".to_string(), set(&[("dc", "eu1")]));
        let err = HostLabels::new([ok, ("x".into(), set(&[("__a", "1")]))]).unwrap_err();
        assert!(err.starts_with("[[host_labels]] table 2"), "{err}");
    }

    #[test]
    fn matching_tables_apply_in_file_order_over_the_agents_labels() {
        let hl = HostLabels::new([
            ("*".to_string(), set(&[("dc", "eu1"), ("tier", "any")])),
            (
                "db-*".to_string(),
                set(&[("role", "database"), ("tier", "gold")]),
            ),
            ("web-*".to_string(), set(&[("role", "web")])),
        ])
        .unwrap();
        let got = hl
            .apply("db-1", set(&[("role", "db"), ("team", "a")]))
            .unwrap();
        assert_eq!(
            got,
            set(&[
                ("dc", "eu1"),
                ("role", "database"),
                ("team", "a"),
                ("tier", "gold")
            ])
        );
        assert_eq!(
            hl.apply("other", set(&[])).unwrap(),
            set(&[("dc", "eu1"), ("tier", "any")])
        );
        // The merged set is checked: 15 from the agent + 2 from the master = 17.
        let agent: BTreeMap<String, String> =
            (0..15).map(|i| (format!("a{i}"), "v".into())).collect();
        let err = hl.apply("db-1", agent).unwrap_err();
        assert_eq!(err.to_string(), "18 labels, the limit is 16");
        // No table matches: the agent's set passes untouched (already validated).
        assert!(HostLabels::default().apply("x", set(&[("a", "1")])).is_ok());
    }
}
