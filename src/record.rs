//! What makes a file a record, and what a record may hold.

use crate::error::{err, Result};
use crate::limits::MAX_JSON_DEPTH;

/// A record is named by a canonical UUID (lower-case, hyphenated) followed by `.json`.
pub fn is_record_name(name: &[u8]) -> bool {
    let Some(stem) = name.strip_suffix(b".json") else {
        return false;
    };
    let Ok(stem) = std::str::from_utf8(stem) else {
        return false;
    };
    stem.len() == 36
        && uuid::Uuid::try_parse(stem).is_ok_and(|u| u.hyphenated().to_string() == stem)
}

/// Why bytes are not a record's: where (1-based line and column) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub line: usize,
    /// None where the fault is a whole line's (nesting too deep).
    pub column: Option<usize>,
    /// The parser's words.
    pub what: String,
    fault: Fault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Utf8,
    TooDeep,
    Syntax,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (line, column, what) = (self.line, self.column.unwrap_or(0), &self.what);
        match self.fault {
            Fault::Utf8 => write!(f, "invalid UTF-8 at line {line} column {column}"),
            Fault::TooDeep => write!(f, "{what}"),
            Fault::Syntax => write!(f, "invalid JSON at line {line} column {column}: {what}"),
        }
    }
}

/// A record holds RFC 8259 JSON text, or nothing (a freshly created file), nesting at most
/// `MAX_JSON_DEPTH` deep. With `allow_nan`, also the tokens `NaN`, `Infinity` and `-Infinity`
/// where a number may stand, as Python's `json.dump` writes them by default.
pub fn check_json(bytes: &[u8], allow_nan: bool) -> std::result::Result<(), Invalid> {
    if bytes.is_empty() {
        return Ok(());
    }
    // serde_json skips the bytes of strings it ignores without checking their UTF-8.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let column = before.len()
            - before
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        Invalid {
            line,
            column: Some(column),
            what: "invalid UTF-8".into(),
            fault: Fault::Utf8,
        }
    })?;
    let text = match allow_nan {
        true => std::borrow::Cow::Owned(nan_as_numbers(text)),
        false => std::borrow::Cow::Borrowed(text),
    };
    match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        // Ignoring values, serde_json keeps no count of depth: count it here.
        Ok(_) => check_depth(bytes),
        Err(e) => {
            let full = e.to_string();
            let at = format!(" at line {} column {}", e.line(), e.column());
            Err(Invalid {
                line: e.line(),
                column: Some(e.column()),
                what: full.strip_suffix(&at).unwrap_or(&full).to_string(),
                fault: Fault::Syntax,
            })
        }
    }
}

/// As `check_json`, strict, as the crate's error (EINVAL).
pub fn validate_json(bytes: &[u8]) -> Result<()> {
    validate_record(bytes, false)
}

/// As `check_json`, as the crate's error (EINVAL).
pub fn validate_record(bytes: &[u8], allow_nan: bool) -> Result<()> {
    check_json(bytes, allow_nan).map_err(|i| err!(EINVAL, "{i}"))
}

/// The text with `NaN`, `Infinity` and `-Infinity` outside strings written as numbers of the
/// same width (`0  `, `0       `, `-0       `), so that positions in errors stay right.
fn nan_as_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["NaN", "Infinity", "-Infinity"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            let number = if token.starts_with('-') { "-0" } else { "0" };
            out.push_str(number);
            out.extend(std::iter::repeat_n(' ', token.len() - number.len()));
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Refuses text (already known to be valid JSON) that nests deeper than `MAX_JSON_DEPTH`.
fn check_depth(bytes: &[u8]) -> std::result::Result<(), Invalid> {
    let (mut depth, mut in_string, mut escaped, mut line) = (0usize, false, false, 1);
    for &b in bytes {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(Invalid {
                        line,
                        column: None,
                        what: format!(
                            "JSON nested deeper than {MAX_JSON_DEPTH} levels at line {line}"
                        ),
                        fault: Fault::TooDeep,
                    });
                }
            }
            (false, _, b']' | b'}') => depth -= 1,
            (false, _, b'\n') => line += 1,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_canonical_uuids() {
        assert!(is_record_name(b"2f1c3d4e-0000-4000-8000-00000000abcd.json"));
        assert!(!is_record_name(
            b"2F1C3D4E-0000-4000-8000-00000000ABCD.json"
        ));
        assert!(!is_record_name(b"2f1c3d4e00004000800000000000abcd.json"));
        assert!(!is_record_name(
            b"{2f1c3d4e-0000-4000-8000-00000000abcd}.json"
        ));
        assert!(!is_record_name(
            b"2f1c3d4e-0000-4000-8000-00000000abcd.json~"
        ));
        assert!(!is_record_name(
            b".2f1c3d4e-0000-4000-8000-00000000abcd.json.swp"
        ));
        assert!(!is_record_name(b"notes.txt"));
        assert!(!is_record_name(b"registry.json"));
    }

    #[test]
    fn json_is_checked_with_line_and_column() {
        assert!(validate_json(b"").is_ok());
        assert!(validate_json(b"{\"a\": [1, 2]}\n").is_ok());
        assert!(validate_json(b"42").is_ok());
        let e = validate_json(b"{\n  \"a\": 1,\n}").unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.reason.contains("line 3 column 1"), "{}", e.reason);
        assert!(validate_json(b"\n").is_err());
        assert!(validate_json(b"{\"a\": \"\xff\"}").is_err());
        assert!(validate_json(b"{} {}").is_err());
    }

    #[test]
    fn nesting_is_limited_outside_strings_only() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(validate_json(nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let e = validate_json(nested(MAX_JSON_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(e.reason.contains("deeper than 127"), "{}", e.reason);
        let deep_text = format!("{{\"s\": \"{}\\\"\", \"t\": {{}}}}", "[{".repeat(200));
        assert!(validate_json(deep_text.as_bytes()).is_ok(), "{deep_text}");
    }

    #[test]
    fn nan_and_infinity_only_when_allowed_and_only_outside_strings() {
        let py = b"{\"a\": NaN, \"b\": [Infinity, -Infinity], \"s\": \"NaN\"}";
        assert!(check_json(py, false).is_err());
        assert_eq!(check_json(py, true), Ok(()));
        // Where a number may not stand, still refused, and the column is the text's own.
        let e = check_json(b"{\"a\": NaN NaN}", true).unwrap_err();
        assert_eq!((e.line, e.column), (1, Some(11)), "{e:?}");
        assert!(check_json(b"{NaN: 1}", true).is_err());
        assert!(check_json(b"[nan]", true).is_err());
        assert!(check_json(b"[NaNa]", true).is_err());
        assert_eq!(check_json(b"\"Infinity\"", false), Ok(()));
    }
}
