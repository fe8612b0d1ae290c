//! `recordfs import` and `recordfs export` (the formats are `crate::transfer`'s). A store
//! that is not mounted is opened here, with `--sync never` and one sync at the end; a mounted
//! one is reached through its mount, so that its daemon commits every record as it would any
//! other save.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{err, Error, Result};
use crate::etcd::layout::{self, Node};
use crate::etcd::{Etcd, EtcdUrl, TOOL_TIMEOUT};
use crate::fs::RecordFs;
use crate::fuse::describe;
use crate::options::{Options, SyncMode};
use crate::progress::Progress;
use crate::store::Layout;
use crate::transfer::{self, Format, Record};
use crate::types::{Fid, Kind, ROOT};

use super::logging::init_quiet_logging;

/// Where the records go or come from: a store opened here, or a mount of it.
pub(super) enum Place {
    Core(Box<RecordFs>, Fid),
    Mount(PathBuf),
}

/// Opens the store, or finds its mount; `dir` (a path under the store's root) is made when
/// `make` and missing.
pub(super) fn open(store: &Path, dir: &str, read_only: bool) -> Result<Place> {
    if EtcdUrl::is_etcd(&store.to_string_lossy()) {
        // export reads a store in etcd itself (`etcd_files`).
        return Err(err!(
            EOPNOTSUPP,
            "writing into a store in etcd is not built yet (recordfs migrate copies a whole store)"
        ));
    }
    let opts = Options {
        sync: SyncMode::Never,
        read_only,
        ..Options::default()
    };
    match RecordFs::start(store, opts) {
        Ok(fs) => match directory(&fs, ROOT, dir, !read_only) {
            Ok(at) => Ok(Place::Core(Box::new(fs), at)),
            Err(e) => {
                let _ = fs.shutdown();
                Err(e)
            }
        },
        Err(e) if e.errno == libc::EBUSY => match crate::store::served_at(&Layout::new(store)) {
            Some(mnt) => {
                let path = mnt.join(dir.trim_start_matches('/'));
                if !read_only {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| Error::io(format!("making {}", path.display()), &e))?;
                }
                Ok(Place::Mount(path))
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The directory `path` (names joined by `/`) under directory `from`, made (0755) where
/// missing when `make`.
pub(super) fn directory(fs: &RecordFs, from: Fid, path: &str, make: bool) -> Result<Fid> {
    let mut at = from;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = match fs.lookup(at, part.as_bytes()) {
            Ok(s) if s.kind == Kind::Dir => s.ino,
            Ok(_) => return Err(err!(ENOTDIR, "{path}: {part} is not a directory")),
            Err(e) if e.errno == libc::ENOENT && make => {
                let (s, t) = fs.mkdir(at, part.as_bytes(), 0o755, 0, 0)?;
                fs.wait(t)?;
                s.ino
            }
            Err(e) => return Err(e),
        };
    }
    Ok(at)
}

fn named_format(name: &str, id: &str) -> Result<Format> {
    Ok(match name {
        "object" => Format::Object,
        "array" => Format::Array { id: id.to_owned() },
        "lines" => Format::Lines { id: id.to_owned() },
        other => {
            return Err(err!(
                EINVAL,
                "--format {other}: one of object, array, lines"
            ))
        }
    })
}

/// JSON lines for a file named *.jsonl or *.ndjson.
fn is_lines(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson")
    )
}

/// The input's format: --format, else by its name (JSON lines), else by its first character.
fn input_format(name: Option<&str>, id: &str, path: &Path, bytes: &[u8]) -> Result<Format> {
    let by_content = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => "array",
        _ => "object",
    };
    let guess = if is_lines(path) { "lines" } else { by_content };
    named_format(name.unwrap_or(guess), id)
}

/// `recordfs import STORE FILE`: exit 0 when every record is in, 1 when the input is refused
/// (nothing written), 2 when the store cannot take them (saying how many it took).
pub(super) fn import_command(
    store: &Path,
    file: &Path,
    format: Option<&str>,
    id: &str,
    dir: &str,
    replace: bool,
) -> i32 {
    init_quiet_logging();
    crate::progress::enable_on_terminal();
    if file.is_dir() {
        return match transfer::read_tree(file, true) {
            Ok(records) => import_records(store, &records, dir, replace),
            Err(why) => {
                eprintln!("recordfs import: {why}; nothing was imported");
                1
            }
        };
    }
    let read = if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map(|_| bytes)
    } else {
        std::fs::read(file)
    };
    let input = match read {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("recordfs import: reading {}: {e}", file.display());
            return 2;
        }
    };
    let records = match input_format(format, id, file, &input)
        .map_err(|e| e.reason)
        .and_then(|f| transfer::parse(&input, &f))
    {
        Ok(records) => records,
        Err(why) => {
            eprintln!(
                "recordfs import: {}: {why}; nothing was imported",
                file.display()
            );
            return 1;
        }
    };
    import_records(store, &records, dir, replace)
}

/// Writes `records` (names may hold `/`: a tree) under `dir` of the store; the exit status.
fn import_records(store: &Path, records: &[Record], dir: &str, replace: bool) -> i32 {
    let result = match store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        Some(url) => super::etcd_import::import(url, records, dir, replace),
        None => {
            let place = match open(store, dir, false) {
                Ok(place) => place,
                Err(e) => {
                    eprintln!("recordfs import: {}: {}", store.display(), describe(&e));
                    return 2;
                }
            };
            let (done, result) = import_into(&place, records, replace);
            (done, result.and(close(place)))
        }
    };
    let (done, result) = result;
    match result {
        Ok(()) => {
            println!("imported {done} records into {}", store.display());
            0
        }
        Err(e) if done == 0 => {
            eprintln!("recordfs import: {}; nothing was imported", describe(&e));
            if e.errno == libc::EEXIST {
                1
            } else {
                2
            }
        }
        Err(e) => {
            let next = &records[done].name;
            eprintln!(
                "recordfs import: {next}: {}; the {done} records before it in the input are \
                 imported, it and the {} after it are not",
                describe(&e),
                records.len() - done - 1
            );
            2
        }
    }
}

/// Writes the records; how many went in, and the error that stopped it.
fn import_into(place: &Place, records: &[Record], replace: bool) -> (usize, Result<()>) {
    // Every name checked before the first write: a refusal changes nothing.
    if !replace {
        let exists = |r: &Record| match place {
            Place::Core(fs, dir) => {
                let (sub, file) = r.name.rsplit_once('/').unwrap_or(("", &r.name));
                directory(fs, *dir, sub, false).is_ok_and(|d| fs.lookup(d, file.as_bytes()).is_ok())
            }
            Place::Mount(dir) => dir.join(&r.name).symlink_metadata().is_ok(),
        };
        if let Some(r) = records.iter().find(|r| exists(r)) {
            return (
                0,
                Err(err!(EEXIST, "{} exists (--replace replaces)", r.name)),
            );
        }
    }
    let mut progress = Progress::new("importing", records.len() as u64);
    for (done, r) in records.iter().enumerate() {
        if let Err(e) = write_to(place, &r.name, &r.bytes) {
            return (done, Err(e));
        }
        progress.tick();
    }
    (records.len(), Ok(()))
}

/// Saves `bytes` as `name` (a path under the place's directory; its directories made where
/// missing): through the core opened here, or through the mount.
pub(super) fn write_to(place: &Place, name: &str, bytes: &[u8]) -> Result<()> {
    match place {
        Place::Core(fs, dir) => {
            let (sub, file) = name.rsplit_once('/').unwrap_or(("", name));
            directory(fs, *dir, sub, true).and_then(|d| put(fs, d, file, bytes))
        }
        Place::Mount(dir) => {
            let path = dir.join(name);
            path.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::write(&path, bytes))
                .map_err(|e| Error::io(format!("writing {name}"), &e))
        }
    }
}

/// Done with the place: a core opened here syncs and stops.
pub(super) fn close(place: Place) -> Result<()> {
    match place {
        Place::Core(fs, _) => fs.shutdown(),
        Place::Mount(_) => Ok(()),
    }
}

/// Saves `bytes` as `name` in `dir`: a new file (0644) made with them in one commit, or the
/// file there rewritten.
fn put(fs: &RecordFs, dir: Fid, name: &str, bytes: &[u8]) -> Result<()> {
    let flags = libc::O_WRONLY | libc::O_TRUNC;
    let fh = match fs.lookup(dir, name.as_bytes()) {
        Ok(s) => fs.open(s.ino, flags)?.0,
        Err(e) if e.errno == libc::ENOENT => {
            let (_, ticket) = fs.create_with(dir, name.as_bytes(), 0o644, bytes.to_vec())?;
            return fs.wait(ticket);
        }
        Err(e) => return Err(e),
    };
    let written = fs
        .write(fh, 0, bytes)
        .and_then(|_| fs.flush(fh))
        .and_then(|t| fs.wait(t));
    fs.release(fh);
    written
}

/// `recordfs export STORE [FILE]`: exit 0 with every record written, 2 when it cannot.
pub(super) fn export_command(
    store: &Path,
    file: Option<&Path>,
    format: Option<&str>,
    dir: &str,
) -> i32 {
    init_quiet_logging();
    crate::progress::enable_on_terminal();
    let path = file.unwrap_or(Path::new("-"));
    if format == Some("dir") {
        return export_tree_command(store, file, dir);
    }
    let guess = if is_lines(path) { "lines" } else { "object" };
    let format = match named_format(format.unwrap_or(guess), "id") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("recordfs export: {}", e.reason);
            return 2;
        }
    };
    let read = match store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        Some(url) => etcd_files(url, dir, false),
        None => open(store, dir, true).and_then(|place| {
            let records = export_from(&place);
            if let Place::Core(fs, _) = place {
                fs.shutdown()?;
            }
            records
        }),
    };
    let records = match read {
        Ok(records) => records,
        Err(e) => {
            eprintln!("recordfs export: {}: {}", store.display(), describe(&e));
            return 2;
        }
    };
    let bytes = transfer::render(&records, &format);
    let written = match file {
        None => std::io::stdout().lock().write_all(&bytes),
        Some(f) if f == Path::new("-") => std::io::stdout().lock().write_all(&bytes),
        Some(f) => std::fs::write(f, &bytes),
    };
    if let Err(e) = written {
        eprintln!("recordfs export: writing {}: {e}", path.display());
        return 2;
    }
    if file.is_some_and(|f| f != Path::new("-")) {
        println!(
            "exported {} records from {}",
            records.len(),
            store.display()
        );
    }
    0
}

/// `recordfs export STORE OUT --format dir`: every regular file under the store's `dir`
/// written under OUT (which must not exist, or be empty), as the store has them.
fn export_tree_command(store: &Path, out: Option<&Path>, dir: &str) -> i32 {
    let Some(out) = out.filter(|o| *o != Path::new("-")) else {
        eprintln!("recordfs export: --format dir writes into a directory: name it");
        return 2;
    };
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!("recordfs export: {} is not empty", out.display());
        return 2;
    }
    let files = match store.to_str().filter(|s| EtcdUrl::is_etcd(s)) {
        Some(url) => etcd_files(url, dir, true),
        None => open(store, dir, true).and_then(|place| {
            let files = match &place {
                Place::Core(fs, at) => tree_of(fs, *at, ""),
                Place::Mount(path) => {
                    transfer::read_tree(path, false).map_err(|e| err!(EIO, "{e}"))
                }
            };
            if let Place::Core(fs, _) = place {
                fs.shutdown()?;
            }
            files
        }),
    };
    let files = match files {
        Ok(files) => files,
        Err(e) => {
            eprintln!("recordfs export: {}: {}", store.display(), describe(&e));
            return 2;
        }
    };
    for f in &files {
        let path = out.join(&f.name);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, &f.bytes));
        if let Err(e) = written {
            eprintln!("recordfs export: writing {}: {e}", path.display());
            return 2;
        }
    }
    println!(
        "exported {} files from {} into {}",
        files.len(),
        store.display(),
        out.display()
    );
    0
}

/// For `recordfs export`: the records (`<uuid>.json`, by name) in directory `dir` of the
/// store at `url`, or with `tree` every regular file under it (by path below it); the store
/// read at one revision and checked.
fn etcd_files(url: &str, dir: &str, tree: bool) -> Result<Vec<Record>> {
    let etcd = Etcd::connect(&EtcdUrl::parse(url)?, TOOL_TIMEOUT)?;
    let store = layout::from_keys(&etcd.get_all(b"")?)?;
    let at = store
        .dir_at(dir)
        .ok_or_else(|| err!(ENOENT, "no directory {dir:?}"))?;
    let record = |(name, node): (String, &Node)| Record {
        name,
        bytes: node.bytes.clone(),
    };
    if tree {
        return Ok(store.files_under(at).into_iter().map(record).collect());
    }
    let mut out = Vec::new();
    for n in store.names_in(at) {
        if let Some(node) = store.node(n.fid) {
            if node.kind == Kind::File && crate::transfer::is_exported(&n.name) {
                out.push(record((
                    String::from_utf8_lossy(&n.name).into_owned(),
                    node,
                )));
            }
        }
    }
    Ok(out)
}

/// Every regular file under directory `at` (symlinks left out), by path under `prefix`.
fn tree_of(fs: &RecordFs, at: Fid, prefix: &str) -> Result<Vec<Record>> {
    let dh = fs.opendir(at)?;
    let entries = fs.readdir(dh, 2);
    fs.releasedir(dh);
    let mut out = Vec::new();
    for e in entries? {
        let name = String::from_utf8(e.name).map_err(|n| {
            err!(
                EILSEQ,
                "{prefix}: a name that is not UTF-8: {:?}",
                n.as_bytes()
            )
        })?;
        let here = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match e.kind {
            Kind::Dir => out.extend(tree_of(fs, e.ino, &here)?),
            Kind::File => out.push(Record {
                name: here,
                bytes: fs.read_whole(e.ino)?,
            }),
            Kind::Symlink => {}
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every record in the place's directory, by name.
fn export_from(place: &Place) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    match place {
        Place::Core(fs, dir) => {
            let dh = fs.opendir(*dir)?;
            let entries = fs.readdir(dh, 2);
            fs.releasedir(dh);
            let mut entries: Vec<_> = entries?
                .into_iter()
                .filter(|e| e.kind == Kind::File && transfer::is_exported(&e.name))
                .collect();
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let mut progress = Progress::new("exporting", entries.len() as u64);
            for e in entries {
                records.push(Record {
                    name: String::from_utf8_lossy(&e.name).into_owned(),
                    bytes: fs.read_whole(e.ino)?,
                });
                progress.tick();
            }
        }
        Place::Mount(dir) => {
            let listing = std::fs::read_dir(dir)
                .map_err(|e| Error::io(format!("listing {}", dir.display()), &e))?;
            let mut names: Vec<String> = listing
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| transfer::is_exported(n.as_bytes()))
                .collect();
            names.sort();
            let mut progress = Progress::new("exporting", names.len() as u64);
            for name in names {
                let bytes = std::fs::read(dir.join(&name))
                    .map_err(|e| Error::io(format!("reading {name}"), &e))?;
                records.push(Record { name, bytes });
                progress.tick();
            }
        }
    }
    Ok(records)
}
