//! Host labels (docs/PROTOCOL.md section 2, `labels`): the one rule for what a label may be.
//!
//! The agent checks its own labels at start, the master checks every hello's labels and the
//! set it merges from master.toml `[[host_labels]]`, and the master's config load checks those
//! tables: all through [`validate`], so the three can never disagree.

use std::collections::BTreeMap;

use crate::limits::{
    MAX_LABELS, MAX_LABELS_BYTES, MAX_LABEL_NAME_BYTES, MAX_LABEL_VALUE_BYTES, RESERVED_LABELS,
};
use crate::text::escape;

/// Why a label set is unacceptable. Every message names the label (escaped, so a hostile name
/// cannot forge a log line or drive a terminal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("{count} labels, the limit is {MAX_LABELS}")]
    TooMany { count: usize },
    #[error("labels take {bytes} bytes (name + value + 2 each), the limit is {MAX_LABELS_BYTES}")]
    TooLarge { bytes: usize },
    #[error("label \"{}\": name is {len} bytes long, the limit is {MAX_LABEL_NAME_BYTES}", escape(.name))]
    NameTooLong { name: String, len: usize },
    #[error("label \"{}\": name must match [a-zA-Z_][a-zA-Z0-9_]*", escape(.name))]
    BadName { name: String },
    #[error("label \"{}\": names starting with __ are reserved", escape(.name))]
    DoubleUnderscore { name: String },
    #[error("label \"{}\": the name is reserved for a label Sentinel sets itself", escape(.name))]
    Reserved { name: String },
    #[error("label \"{}\": value is empty", escape(.name))]
    EmptyValue { name: String },
    #[error("label \"{}\": value is {len} bytes long, the limit is {MAX_LABEL_VALUE_BYTES}", escape(.name))]
    ValueTooLong { name: String, len: usize },
    #[error("label \"{}\": value has the control character U+{code:04X}", escape(.name))]
    ControlInValue { name: String, code: u32 },
}

/// Checks one label set against docs/PROTOCOL.md: at most [`MAX_LABELS`] labels, names of
/// Prometheus label-name syntax that are neither `__`-prefixed nor in [`RESERVED_LABELS`],
/// values of 1..=[`MAX_LABEL_VALUE_BYTES`] bytes without control characters, and the whole set
/// within [`MAX_LABELS_BYTES`]. Plain byte loops: the agent's size budget has no room for regex.
pub fn validate(labels: &BTreeMap<String, String>) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: labels.len(),
        });
    }
    for (name, value) in labels {
        validate_one(name, value)?;
    }
    let bytes = encoded_len(labels);
    if bytes > MAX_LABELS_BYTES {
        return Err(LabelError::TooLarge { bytes });
    }
    Ok(())
}

/// Checks one label's name and value (everything of [`validate`] but the set's bounds).
pub fn validate_one(name: &str, value: &str) -> Result<(), LabelError> {
    let owned = || name.to_owned();
    if name.len() > MAX_LABEL_NAME_BYTES {
        // Only the limit's worth of the name goes into the message: the reason travels back
        // to the peer and into the log, and must not be as large as a frame.
        let mut end = MAX_LABEL_NAME_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        return Err(LabelError::NameTooLong {
            name: format!("{}...", &name[..end]),
            len: name.len(),
        });
    }
    if !is_label_name(name) {
        return Err(LabelError::BadName { name: owned() });
    }
    if name.starts_with("__") {
        return Err(LabelError::DoubleUnderscore { name: owned() });
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(LabelError::Reserved { name: owned() });
    }
    if value.is_empty() {
        return Err(LabelError::EmptyValue { name: owned() });
    }
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(LabelError::ValueTooLong {
            name: owned(),
            len: value.len(),
        });
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        // char::is_control is Unicode's Cc: C0, DEL and C1 exactly.
        return Err(LabelError::ControlInValue {
            name: owned(),
            code: u32::from(c),
        });
    }
    Ok(())
}

/// Prometheus label-name syntax `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Bytes the set takes in the master's table: `name=value\0` per label.
pub fn encoded_len(labels: &BTreeMap<String, String>) -> usize {
    labels.iter().map(|(n, v)| n.len() + v.len() + 2).sum()
}

/// Parses one `KEY=VALUE` (the agent's and the load generator's `--label`): split at the first
/// `=`, then [`validate_one`]. The error is a sentence naming the argument.
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once('=') else {
        return Err(format!("label \"{}\": expected KEY=VALUE", escape(arg)));
    };
    validate_one(name, value).map_err(|e| e.to_string())?;
    Ok((name.to_owned(), value.to_owned()))
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
    fn accepts_prometheus_names_and_plain_values() {
        let ok = set(&[
            ("role", "db"),
            ("dc", "eu1"),
            ("_private", "x"),
            ("Team_2", "Zürich 東京 / a=b"),
            (&"n".repeat(MAX_LABEL_NAME_BYTES), "v"),
        ]);
        assert_eq!(validate(&ok), Ok(()));
        assert_eq!(validate(&BTreeMap::new()), Ok(()));
    }

    #[test]
    fn refuses_each_bad_label_naming_it() {
        let long_name = "n".repeat(MAX_LABEL_NAME_BYTES + 1);
        let long_value = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
        let cases: &[(&str, &str, &str)] = &[
            ("host", "x", "label \"host\": the name is reserved"),
            ("instance", "x", "label \"instance\": the name is reserved"),
            (
                "__x",
                "x",
                "label \"__x\": names starting with __ are reserved",
            ),
            (
                "1abc",
                "x",
                "label \"1abc\": name must match [a-zA-Z_][a-zA-Z0-9_]*",
            ),
            ("a-b", "x", "label \"a-b\": name must match"),
            ("", "x", "label \"\": name must match"),
            ("é", "x", "label \"é\": name must match"),
            ("a\nb", "x", "label \"a\\nb\": name must match"),
            (&long_name, "x", "name is 65 bytes long, the limit is 64"),
            ("role", "", "label \"role\": value is empty"),
            (
                "role",
                &long_value,
                "label \"role\": value is 129 bytes long, the limit is 128",
            ),
            (
                "role",
                "a\u{7}b",
                "label \"role\": value has the control character U+0007",
            ),
            (
                "role",
                "a\u{7f}",
                "label \"role\": value has the control character U+007F",
            ),
            (
                "role",
                "a\u{85}",
                "label \"role\": value has the control character U+0085",
            ),
        ];
        for (name, value, expected) in cases {
            let error = validate(&set(&[(name, value)])).expect_err(name);
            assert!(
                error.to_string().contains(expected),
                "{name:?}={value:?}: {error}"
            );
        }
    }

    #[test]
    fn refuses_too_many_and_too_large_sets() {
        let many: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("l{i}"), "v".to_string()))
            .collect();
        assert_eq!(
            validate(&many).unwrap_err().to_string(),
            "17 labels, the limit is 16"
        );
        // 5 labels of 64 + 128 + 2 bytes: each is fine, the set is not.
        let large: BTreeMap<String, String> = (b'a'..=b'e')
            .map(|c| ((c as char).to_string().repeat(64), "v".repeat(128)))
            .collect();
        assert_eq!(large.len(), 5);
        assert!(matches!(
            validate(&large),
            Err(LabelError::TooLarge { bytes: 970 })
        ));
    }

    #[test]
    fn parses_assignments() {
        assert_eq!(
            parse_assignment("role=db=primary"),
            Ok(("role".into(), "db=primary".into()))
        );
        assert!(parse_assignment("role")
            .unwrap_err()
            .contains("expected KEY=VALUE"));
        assert!(parse_assignment("host=x").unwrap_err().contains("reserved"));
    }
}
