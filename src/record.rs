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

/// A record holds RFC 8259 JSON text, or nothing (a freshly created file).
///
/// serde_json checks UTF-8 and grammar; it also refuses nesting deeper than 128 levels, a
/// limit we keep on purpose (see README, Limits).
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
        Ok(_) => Ok(()),
        Err(e) => Err(err!(
            EINVAL,
            "invalid JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            e
        )),
    }
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
}
