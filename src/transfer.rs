//! Records in and out in bulk: `recordfs import` and `recordfs export`. The input is read
//! and checked whole before anything is written (every record valid JSON, every id a UUID
//! named once, no record that exists unless replacing is asked), so a bad input changes
//! nothing and says which line, index or key is wrong. Each record's bytes are kept exactly as
//! the input spells them, and an export spells them back the same way: a file that export
//! wrote imports and exports to the same bytes.
//!
//! Formats (`Format`):
//! - object: `{"<uuid>": RECORD, ...}`; export writes `{`, a line `"<uuid>": RECORD,` per
//!   record, and `}`;
//! - array: `[RECORD, ...]`, each record an object whose field ID (`--id`) is its UUID;
//!   export writes `[`, a line per record, `]`;
//! - lines: one record per line (JSON lines), ID as for array; export writes a record that
//!   spans lines on one, without the whitespace between its tokens.
//!
//! Records are `<uuid>.json` files in one directory of the store (`--dir`, the root by
//! default). Export lists them by name.

use std::collections::BTreeSet;

use serde_json::value::RawValue;

use crate::limits::DEFAULT_MAX_FILE_SIZE;
use crate::record::is_record_name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Object,
    Array { id: String },
    Lines { id: String },
}

/// One record: its file name (`<uuid>.json`) and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The records of `input`, checked: Err names what is wrong and where.
pub fn parse(input: &[u8], format: &Format) -> Result<Vec<Record>, String> {
    let mut seen = BTreeSet::new();
    let mut records = Vec::new();
    let mut add = |id: &str, bytes: &[u8], at: &dyn Fn() -> String| -> Result<(), String> {
        let name = format!("{id}.json");
        if !is_record_name(name.as_bytes()) {
            return Err(format!(
                "{}: the id {id:?} is not a UUID as record names spell one (lowercase, \
                 8-4-4-4-12 hex digits)",
                at()
            ));
        }
        if bytes.len() as u64 > DEFAULT_MAX_FILE_SIZE {
            return Err(format!("{}: the record is larger than a file may be", at()));
        }
        if !seen.insert(id.to_owned()) {
            return Err(format!("{}: the id {id} comes twice", at()));
        }
        records.push(Record {
            name,
            bytes: bytes.to_vec(),
        });
        Ok(())
    };
    match format {
        Format::Object => {
            let map: Vec<(String, &RawValue)> = parse_object(input)?;
            for (key, value) in map {
                add(&key, value.get().as_bytes(), &|| format!("key {key:?}"))?;
            }
        }
        Format::Array { id } => {
            let items: Vec<&RawValue> = serde_json::from_slice(input)
                .map_err(|e| format!("not a JSON array of records: {e}"))?;
            for (i, item) in items.iter().enumerate() {
                let at = || format!("record {i} (from 0)");
                add(
                    &id_of(item.get(), id).map_err(|e| format!("{}: {e}", at()))?,
                    item.get().as_bytes(),
                    &at,
                )?;
            }
        }
        Format::Lines { id } => {
            for (n, line) in input.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let at = || format!("line {}", n + 1);
                let text = std::str::from_utf8(line).map_err(|_| format!("{}: not UTF-8", at()))?;
                let item: &RawValue =
                    serde_json::from_str(text).map_err(|e| format!("{}: {e}", at()))?;
                add(
                    &id_of(item.get(), id).map_err(|e| format!("{}: {e}", at()))?,
                    line,
                    &at,
                )?;
            }
        }
    }
    Ok(records)
}

/// An object's keys and raw values, in order, refusing a key given twice.
fn parse_object(input: &[u8]) -> Result<Vec<(String, &RawValue)>, String> {
    struct Pairs<'a>(Vec<(String, &'a RawValue)>);
    impl<'de: 'a, 'a> serde::Deserialize<'de> for Pairs<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
                type Value = Pairs<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object of records keyed by UUID")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut m: M,
                ) -> Result<Pairs<'a>, M::Error> {
                    let mut pairs = Vec::new();
                    while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                        pairs.push((k, v));
                    }
                    Ok(Pairs(pairs))
                }
            }
            d.deserialize_map(Visit(std::marker::PhantomData))
        }
    }
    let pairs: Pairs =
        serde_json::from_slice(input).map_err(|e| format!("not a JSON object of records: {e}"))?;
    Ok(pairs.0)
}

/// The string in field `field` of the object `record`.
fn id_of(record: &str, field: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(record).map_err(|e| e.to_string())?;
    let object = value.as_object().ok_or("not a JSON object")?;
    match object.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("its {field:?} is not a string")),
        None => Err(format!("it has no {field:?} field")),
    }
}

/// The records as `format` writes them.
pub fn render(records: &[Record], format: &Format) -> Vec<u8> {
    let mut out = Vec::new();
    let last = records.len().saturating_sub(1);
    match format {
        Format::Object | Format::Array { .. } => {
            // A line per record, keyed by its UUID in an object.
            let keyed = *format == Format::Object;
            out.extend_from_slice(if keyed { b"{\n" } else { b"[\n" });
            for (i, r) in records.iter().enumerate() {
                if keyed {
                    let id = r.name.strip_suffix(".json").unwrap_or(&r.name);
                    out.extend_from_slice(format!("{id:?}: ").as_bytes());
                }
                out.extend_from_slice(&r.bytes);
                out.extend_from_slice(if i < last { b",\n" } else { b"\n" });
            }
            out.extend_from_slice(if keyed { b"}\n" } else { b"]\n" });
        }
        Format::Lines { .. } => {
            for r in records {
                out.extend_from_slice(&on_one_line(&r.bytes));
                out.push(b'\n');
            }
        }
    }
    out
}

/// JSON without the whitespace between its tokens (strings kept as they are).
fn on_one_line(json: &[u8]) -> Vec<u8> {
    if !json.contains(&b'\n') && !json.contains(&b'\r') {
        return json.to_vec();
    }
    let (mut out, mut in_string, mut escaped) = (Vec::with_capacity(json.len()), false, false);
    for &b in json {
        if in_string {
            out.push(b);
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if !b.is_ascii_whitespace() {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

/// Every regular file under `dir`, by its path relative to it (names joined by `/`), in
/// name order: what `import DIR` brings in, and an export of a mounted store reads. A file
/// named as a record must hold valid JSON. Anything but regular files and directories is
/// refused by path when `strict` (a tree is copied as files, not as links or devices), else
/// left out. Empty directories are not kept.
pub fn read_tree(dir: &std::path::Path, strict: bool) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = todo.pop() {
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| format!("{}: {n:?} is not UTF-8", path.display()))?;
            let here = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let kind = e.file_type().map_err(|err| format!("{here}: {err}"))?;
            if kind.is_dir() {
                todo.push((e.path(), here));
            } else if kind.is_file() {
                let bytes = std::fs::read(e.path()).map_err(|err| format!("{here}: {err}"))?;
                if bytes.len() as u64 > DEFAULT_MAX_FILE_SIZE {
                    return Err(format!("{here}: larger than a file may be"));
                }
                if is_record_name(name.as_bytes()) {
                    crate::record::validate_record(&bytes, false)
                        .map_err(|err| format!("{here}: {}", err.reason))?;
                }
                out.push(Record { name: here, bytes });
            } else if strict {
                return Err(format!("{here}: not a regular file or a directory"));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether `name` is one an export takes: a record's, `<uuid>.json`.
pub fn is_exported(name: &[u8]) -> bool {
    is_record_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0f8c4e2a-9b1d-4c3e-8a7f-0123456789ab";
    const B: &str = "1f8c4e2a-9b1d-4c3e-8a7f-0123456789ab";

    #[test]
    fn each_format_round_trips_byte_for_byte() {
        let object =
            format!("{{\n\"{A}\": {{\"n\": 1, \"s\": \"a b\"}},\n\"{B}\": [\n  2\n]\n}}\n");
        let array = format!("[\n{{\"id\": \"{A}\", \"n\": 1}},\n{{\"id\": \"{B}\"}}\n]\n");
        let lines = format!("{{\"id\": \"{A}\", \"n\": 1}}\n{{\"id\": \"{B}\", \"s\": \" x \"}}\n");
        let id = || "id".to_owned();
        for (text, format) in [
            (object, Format::Object),
            (array, Format::Array { id: id() }),
            (lines, Format::Lines { id: id() }),
        ] {
            let records = parse(text.as_bytes(), &format).unwrap();
            assert_eq!(records.len(), 2);
            assert_eq!(records[0].name, format!("{A}.json"));
            assert_eq!(String::from_utf8(render(&records, &format)).unwrap(), text);
        }
        let spread = Record {
            name: format!("{A}.json"),
            bytes: b"{\n  \"a\": \"x \\\" y\",\n  \"b\": [1, 2]\n}".to_vec(),
        };
        assert_eq!(
            render(&[spread], &Format::Lines { id: id() }),
            b"{\"a\":\"x \\\" y\",\"b\":[1,2]}\n"
        );
    }

    #[test]
    fn bad_input_is_refused_naming_where() {
        let id = || "id".to_owned();
        for (text, format, words) in [
            (
                format!("{{\"{}\": {{}}}}", A.to_uppercase()),
                Format::Object,
                "is not a UUID as record names spell one",
            ),
            (
                format!("{{\"{A}\": {{}}, \"nope\": 1}}"),
                Format::Object,
                "key \"nope\": the id \"nope\" is not a UUID",
            ),
            (
                format!("{{\"{A}\": {{}}, \"{A}\": 1}}"),
                Format::Object,
                "comes twice",
            ),
            (
                format!("{{\"{A}\": {{]}}"),
                Format::Object,
                "not a JSON object of records",
            ),
            (
                format!("[{{\"id\": \"{A}\"}}, {{\"n\": 1}}]"),
                Format::Array { id: id() },
                "record 1 (from 0): it has no \"id\" field",
            ),
            (
                format!("[{{\"id\": \"{A}\"}}, 5]"),
                Format::Array { id: id() },
                "record 1 (from 0): not a JSON object",
            ),
            (
                format!("{{\"id\": \"{A}\"}}\n\n{{\"id\": 7}}\n"),
                Format::Lines { id: id() },
                "line 3: its \"id\" is not a string",
            ),
            (
                format!("{{\"id\": \"{A}\"}}\n{{\"id\": \"{B}\",}}\n"),
                Format::Lines { id: id() },
                "line 2: key must be a string",
            ),
        ] {
            let e = parse(text.as_bytes(), &format).unwrap_err();
            assert!(e.contains(words), "{text}: {e}");
        }
    }
}
