//! What makes a file a record, and what a record may hold.

use crate::error::{err, Result};

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

/// The deepest a record's arrays and objects may nest: the most serde_json reads by default
/// (its recursion limit, 128, counts the top level too), so that a program reading records
/// with it can read every record (README, Limits).
pub const MAX_JSON_DEPTH: usize = 127;

/// A record holds RFC 8259 JSON text, or nothing (a freshly created file), nesting at most
/// `MAX_JSON_DEPTH` deep.
pub fn validate_json(bytes: &[u8]) -> Result<()> {
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
        err!(EINVAL, "invalid UTF-8 at line {line} column {column}")
    })?;
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        // Ignoring values, serde_json keeps no count of depth: count it here.
        Ok(_) => check_depth(bytes),
        Err(e) => Err(err!(
            EINVAL,
            "invalid JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            e
        )),
    }
}

/// Refuses text (already known to be valid JSON) that nests deeper than `MAX_JSON_DEPTH`.
fn check_depth(bytes: &[u8]) -> Result<()> {
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
                    return Err(err!(
                        EINVAL,
                        "JSON nested deeper than {MAX_JSON_DEPTH} levels at line {line}"
                    ));
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
}
