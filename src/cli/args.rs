//! The command line's words: every subcommand, argument and option, with its help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::limits::{
    DEFAULT_MAX_FILE_SIZE, DEFAULT_THREADS, MAX_MAX_FILE_SIZE, MAX_THREADS, MIN_LOG_LIMIT,
};
use crate::options::SyncMode;

#[derive(Parser, Debug)]
#[command(
    name = "recordfs",
    version,
    about = "A filesystem of JSON records: every save is atomic, durable, checked and logged.",
    long_about = "recordfs serves a directory in which every file named <uuid>.json must hold valid JSON. \
Ordinary programs use it with plain file I/O; every change they make is committed atomically at close, \
fsync or rename, written to a checksummed log, then to a backing file in STORE, and recovered after any crash.",
    after_long_help = "Examples:
  recordfs mount /var/lib/records /srv/records          serve a store (made if missing)
  mount -t fuse.recordfs /var/lib/records /srv/records -o sync=fsync
  recordfs stats /var/lib/records                       what a store holds
  recordfs log /var/lib/records --name NAME.json | jq   one record's history

Exit status:
  0  done (check: the store is sound)
  1  check: the store has problems, each reported; log: --name matched no entry
  2  the command could not do its work (a bad argument or option, a store that cannot be
     read or served); the reason is on stderr"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub etcd: EtcdAccess,
}

/// How to reach a cluster that takes only TLS clients or known users: for etcd://
/// addresses, with etcdctl's names and environment variables.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "etcd access (etcd:// stores only; as etcdctl takes them)")]
pub struct EtcdAccess {
    /// Connect with TLS and check the members' certificates against this CA (PEM).
    #[arg(long, global = true, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// The client certificate (PEM) for members that ask for one (with --key).
    #[arg(long, global = true, env = "ETCDCTL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, env = "ETCDCTL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Log in as this etcd user: NAME:PASSWORD, or NAME with the password in
    /// ETCDCTL_PASSWORD or --password-file (a command line is visible to every local user).
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_USER",
        value_name = "NAME[:PASSWORD]"
    )]
    pub user: Option<String>,
    /// A file whose first line is the user's password.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve STORE at MOUNTPOINT (STORE is created if missing or empty).
    Mount(MountArgs),
    /// Verify a store offline: every log checksum, every backing file against the log.
    /// Exits 0 when sound, 1 with a report when anything is wrong, 2 when it cannot check.
    #[command(after_long_help = "Examples:
  recordfs check /var/lib/records          (the store not mounted: umount it first)
  recordfs check /var/lib/records || recordfs mount --salvage /var/lib/records /srv/records

Exit status: 0 sound; 1 problems, a line each (what, where, and what to do); 2 it could not
check (not a store, or mounted).")]
    Check {
        /// The store to check (not mounted), or etcd://HOST:PORT[,...]/PREFIX: every key
        /// read at one revision, every name, piece, size, checksum and record checked.
        store: PathBuf,
    },
    /// Print the log's entries, one JSON object per line as stored (for jq): a record's
    /// history with --name. Works on a mounted store too. Exits 1 when --name matches no
    /// entry (saying so on stderr), 2 on an error.
    #[command(after_long_help = "Examples:
  recordfs log /var/lib/records --since 4700 | jq -c '{seq, op, name}'
  recordfs log /var/lib/records --name players/<uuid>.json | jq -r .op
  recordfs log etcd://10.0.0.1:2379/records --since 4700 | jq -c '{revision, op, path}'

Of a store in etcd (etcd://...) it prints the changes etcd keeps, by revision: SET, ATTR,
RENAME, LINK and DELETE lines with the revision, fid and path (FORMAT.md has the fields).

Exit status: 0 printed; 1 --name matched no entry; 2 an error (not a store).")]
    Log {
        /// The store whose log to print (mounted or not), or an etcd://... address.
        store: PathBuf,
        /// Only entries about this path, as `dir/name` in the directories that hold it now
        /// (also as either side of a rename); of etcd, the changes of every file that held
        /// it at some revision.
        #[arg(long)]
        name: Option<String>,
        /// Only entries with this sequence number (of etcd: revision) or later.
        #[arg(long)]
        since: Option<u64>,
        /// Only entries with this sequence number (of etcd: revision) or earlier.
        #[arg(long)]
        until: Option<u64>,
    },
    /// Compact a store that is not mounted: write a snapshot, start a new log segment, and
    /// move the old segments to STORE/log/old/ (the newest --keep-logs are kept).
    #[command(after_long_help = "Examples:
  recordfs compact /var/lib/records                 (mounted: its daemon is asked to)
  recordfs compact /var/lib/records --keep-logs 10  (keep more history: see `recordfs stats`)

Exit status: 0 compacted (or asked); 2 an error.")]
    Compact {
        /// The store to compact (a mounted one's daemon is asked to).
        store: PathBuf,
        /// How many old segments (and snapshots) to keep.
        #[arg(long, default_value_t = crate::limits::DEFAULT_KEEP_LOGS)]
        keep_logs: usize,
        /// Compact a store that users other than its owner can reach, instead of refusing.
        #[arg(long)]
        allow_open_store: bool,
    },
    /// List the saves refused as invalid JSON that the store keeps (the newest 256): when,
    /// which file, the parser's line, column and words, and where the refused bytes are.
    /// Works on a mounted store too.
    #[command(after_long_help = "Examples:
  recordfs rejected /var/lib/records
  recordfs rejected /var/lib/records --json | jq -r .name

Exit status: 0 listed (also when there is none); 2 an error (not a store).")]
    Rejected {
        /// The store whose refusals to list.
        store: PathBuf,
        /// One JSON object per line, for scripts and jq.
        #[arg(long)]
        json: bool,
    },
    /// Count records and plain files (and their bytes), the log's size and entries, and the
    /// last checkpoint. Works on a mounted store too.
    #[command(after_long_help = "Examples:
  recordfs stats /var/lib/records
  recordfs stats /var/lib/records --json | jq .records

Exit status: 0 printed; 2 an error (not a store).")]
    Stats {
        /// The store to describe (mounted or not), or etcd://HOST:PORT[,...]/PREFIX.
        store: PathBuf,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Bring records in from one file: a JSON object keyed by UUID, a JSON array of objects
    /// whose --id field is the UUID, or JSON lines of such objects; or every file of a
    /// directory tree. The whole input is checked before anything is written. Works on a
    /// mounted store too (through its mount).
    #[command(after_long_help = "Examples:
  recordfs import /var/lib/records players.json                 {\"<uuid>\": {...}, ...}
  recordfs import /var/lib/records players.json --id player_id  [{\"player_id\": \"<uuid>\", ...}, ...]
  recordfs import /var/lib/records events.jsonl --dir events    one object per line
  recordfs import /var/lib/records ./backup/                     a directory tree, as files

Each record becomes DIR/<uuid>.json holding the record's bytes exactly as the input spells
them. A file written by `recordfs export` imports to the same records, and exports again to
the same bytes.

Exit status: 0 every record imported; 1 the input was refused (which line, index or key,
and why; nothing was imported), or a record exists without --replace; 2 the store could not
take them (how many it took is said).")]
    Import {
        /// The store to import into (mounted or not).
        store: PathBuf,
        /// The file to read (- for standard input), or a directory whose tree to copy in.
        file: PathBuf,
        /// object, array or lines (by default: lines for *.jsonl and *.ndjson, else array
        /// when the input starts with [, else object).
        #[arg(long)]
        format: Option<String>,
        /// The field of each record that holds its UUID (array and lines).
        #[arg(long, default_value = "id")]
        id: String,
        /// The directory of the store the records go in (made if missing).
        #[arg(long, default_value = "")]
        dir: String,
        /// Replace records that exist (otherwise one that exists refuses the import).
        #[arg(long)]
        replace: bool,
    },
    /// Write every record (<uuid>.json) of a directory of the store to one file, by name:
    /// a JSON object keyed by UUID, a JSON array, or JSON lines; or, with --format dir,
    /// every file of its tree into a directory. Works on a mounted store too.
    #[command(after_long_help = "Examples:
  recordfs export /var/lib/records players.json
  recordfs export /var/lib/records events.jsonl --dir events
  recordfs export /var/lib/records --format array | jq length
  recordfs export /var/lib/records ./backup --format dir          the tree, as files

Exit status: 0 written; 2 the store could not be read or the file written.")]
    Export {
        /// The store to export from (mounted or not), or etcd://HOST:PORT[,...]/PREFIX.
        store: PathBuf,
        /// The file to write (standard output without it, or with -).
        file: Option<PathBuf>,
        /// object, array, lines or dir (by default: lines for *.jsonl and *.ndjson, else
        /// object).
        #[arg(long)]
        format: Option<String>,
        /// The directory of the store whose records to write.
        #[arg(long, default_value = "")]
        dir: String,
    },
    /// List a name's versions that the kept log holds: entry, time, operation, size.
    #[command(after_long_help = "Examples:
  recordfs history /var/lib/records players/<uuid>.json
  recordfs history /var/lib/records <uuid>.json --json | jq -r .seq

A version is what the name held after an entry: a save (SET or PATCH), a file renamed or
linked onto it (RENAME, LINK), or the name removed or renamed away (DELETE, RENAME; size -).
History reaches back to the oldest log segment kept (--keep-logs; `recordfs stats` says how
far). Works on a mounted store too.

Exit status: 0 listed; 1 the kept log has no version of the name; 2 an error.")]
    History {
        /// The store (mounted or not).
        store: PathBuf,
        /// The path in the store (names joined by /, as the directories are called now).
        name: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print a version of a name: the latest, or the one current at an entry or a time.
    #[command(after_long_help = "Examples:
  recordfs show /var/lib/records <uuid>.json --at 4711
  recordfs show /var/lib/records <uuid>.json --at 2026-12-04T08:17:13.520Z | jq .

Exit status: 0 printed; 1 no such version (the name did not exist then, or the kept log no
longer holds its bytes: the message says which); 2 an error.")]
    Show {
        /// The store (mounted or not).
        store: PathBuf,
        /// The path in the store.
        name: String,
        /// An entry's sequence number, or a time in ISO 8601 UTC as `history` prints it.
        #[arg(long)]
        at: Option<String>,
    },
    /// Save a version of a name again (also of one since deleted), as an ordinary save:
    /// through the daemon when the store is mounted.
    #[command(after_long_help = "Examples:
  recordfs history /var/lib/records <uuid>.json
  recordfs restore /var/lib/records <uuid>.json --at 4711

The restored bytes become a new version (a record must still be valid JSON). The versions
after the one restored stay in the history.

Exit status: 0 restored; 1 no such version; 2 an error (the save refused, the store).")]
    Restore {
        /// The store (mounted or not).
        store: PathBuf,
        /// The path in the store (its directories are made if they are gone).
        name: String,
        /// An entry's sequence number, or a time in ISO 8601 UTC.
        #[arg(long)]
        at: String,
    },
    /// Copy a whole store between a directory and an etcd cluster: from a store directory
    /// (not mounted) into an empty etcd prefix, or from etcd into a new store directory.
    #[command(after_long_help = "Examples:
  recordfs migrate /var/lib/records etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/records
  recordfs migrate etcd://10.0.0.1:2379/records /var/lib/records-copy

Every directory, file and symlink is copied with its names (hard links stay one file), bytes,
mode, owner, times (not ctime) and extended attributes. Into etcd the prefix must hold no
keys; its `meta` key is written last, so a migration cut short is never taken for a store.
Out of etcd the directory must be new or empty, and every record must hold JSON.

Exit status: 0 copied (a line says what); 2 nothing usable was made (why is on stderr:
a mounted store, a prefix with keys, a directory that is not empty, a cluster that did not
answer within 10 s).")]
    Migrate {
        /// A store directory, or etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
        from: String,
        /// The same, the other kind.
        to: String,
    },
    /// Print the shell completion script for SHELL on stdout.
    #[command(after_long_help = "Examples:
  recordfs completions bash > /etc/bash_completion.d/recordfs
  recordfs completions zsh > /usr/local/share/zsh/site-functions/_recordfs
  recordfs completions fish > ~/.config/fish/completions/recordfs.fish
(scripts/install.sh does this for bash, zsh and fish.)")]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (recordfs.1, recordfs-mount.1, ...) into DIR.
    #[command(hide = true)]
    Manpages {
        /// The directory to write them to (made if missing).
        dir: PathBuf,
    },
}

/// `recordfs mount`'s arguments and options.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "Examples:
  recordfs mount /var/lib/records /srv/records
  recordfs mount --sync fsync --allow-other /var/lib/records /srv/records
  recordfs mount /var/lib/records /srv/records -o sync=fsync,allow_other   (the same)
  mount -t fuse.recordfs /var/lib/records /srv/records -o sync=fsync,nosuid,nodev
  umount /srv/records                                  (the daemon syncs, then exits)
  recordfs mount etcd://10.0.0.1:2379,10.0.0.2:2379/records /srv/records
  recordfs mount --read-only etcd://10.0.0.1:2379/records /srv/records   (follows it)

An /etc/fstab line, then `mount /srv/records`:
  /var/lib/records  /srv/records  fuse.recordfs  defaults,sync=fsync,nofail  0  0

mount(8) runs mount.fuse3 (Debian's fuse3), which runs `recordfs STORE MOUNTPOINT -o
OPTIONS`: recordfs must be on mount's PATH (scripts/install.sh puts it in /usr/local/bin).
Users other than root mount through fusermount3. `recordfs mount` returns once the mount is
live, or fails with the reason and exit status 2.")]
pub struct MountArgs {
    /// The directory recordfs keeps the log and backing files in (created 0700 if
    /// missing; an empty directory is made a store; anything else is refused), or
    /// etcd://HOST:PORT[,...]/PREFIX: a store in etcd (several mounts may change it; each
    /// follows the others' changes).
    pub store: PathBuf,
    /// An existing directory to serve the store at.
    pub mountpoint: PathBuf,
    /// When a commit is durable: always (at the syscall), fsync (at fsync), never (at unmount).
    #[arg(long, value_enum, default_value = "always")]
    pub sync: SyncMode,
    /// Stay in the foreground; otherwise return once the mount is live.
    #[arg(long)]
    pub foreground: bool,
    /// Serve the store read-only (a store in etcd: follow the changes of the mount that
    /// changes it).
    #[arg(long)]
    pub read_only: bool,
    /// Let users other than the one mounting use the mount.
    #[arg(long)]
    pub allow_other: bool,
    /// The largest file, in bytes (writes past it get EFBIG). At most 1 GiB.
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_SIZE,
          value_parser = clap::value_parser!(u64).range(1..=MAX_MAX_FILE_SIZE))]
    pub max_file_size: u64,
    /// FUSE request threads. Syncs never block them; more than the CPUs keep one free to read
    /// requests while others answer (limits.rs, DEFAULT_THREADS).
    #[arg(long, default_value_t = DEFAULT_THREADS, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_THREADS)))]
    pub threads: u16,
    /// Compact the log while mounted once its live segment passes this many bytes
    /// (at least 4096) [default: 1 MiB, or the last snapshot's size up to 8 MiB]
    #[arg(long, value_parser = clap::value_parser!(u64).range(MIN_LOG_LIMIT..))]
    pub log_limit: Option<u64>,
    /// ... or this many seconds after the last compaction, whichever comes first.
    #[arg(long, default_value_t = crate::limits::DEFAULT_COMPACT_EVERY_SECS)]
    pub compact_every: u64,
    /// Old log segments (and snapshots) kept in STORE/log/old/.
    #[arg(long, default_value_t = crate::limits::DEFAULT_KEEP_LOGS)]
    pub keep_logs: usize,
    /// Mount a store whose log is damaged in the middle: drop the lines that cannot be
    /// used (each named, its bytes kept in STORE/log/), keep every other commit.
    #[arg(long, conflicts_with = "read_only")]
    pub salvage: bool,
    /// Look at every name in STORE/root/ and check every backing file's bytes against the
    /// log before the mount goes live, setting aside what the log does not know. Without it
    /// a mount looks only at what the log touched since its last checkpoint, and checks
    /// every other backing file at its first read.
    #[arg(long)]
    pub verify: bool,
    /// Serve a store that users other than its owner can read or enter (STORE, its
    /// directories or log readable by group or others), instead of refusing it. The log
    /// holds every file's bytes, whatever the file's mode.
    #[arg(long)]
    pub allow_open_store: bool,
    /// Let records hold NaN, Infinity and -Infinity as numbers, as Python's json.dump
    /// writes them by default (they are not JSON, and most other readers refuse them).
    #[arg(long)]
    pub allow_nan: bool,
    /// Options as mount(8) and fstab give them, comma-separated, later ones winning: each
    /// option above by its name (sync=fsync, ro or read_only, max_file_size=N, ...); nosuid,
    /// nodev, noexec; and mount(8)'s and systemd's own (defaults, _netdev, nofail, noauto,
    /// user, x-systemd.*, the atime ones), which change nothing here.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
}
