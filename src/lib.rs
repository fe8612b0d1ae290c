//! recordfs: a FUSE filesystem of JSON records with atomic, durable, write-through commits.
//!
//! Data flows one way: syscall → `fuse` (the adapter) → `fs` (the core) → `pipeline` (commits)
//! → `log` → `store` (the STORE directory) → `disk` (the storage seam).
//!
//! The layer rule: a module imports only modules of its own layer or below, never above, and
//! no two modules import each other, directly or round a circle. Bottom to top:
//!
//! 1. shared words: `types`, `error`, `limits`, `options`, `record` (the JSON rule), `caller`,
//!    `progress`, `mounts` (the system's mount table);
//! 2. `disk`: the storage seam (`RealDisk`; `disk::sim`, the simulated disk, for tests);
//!    `view`: a file's bytes as a reader or writer sees them (memory, a backing file, or
//!    written ranges over either);
//! 3. `store`: STORE's layout, marker, lock, access, refused saves, atomic replacement;
//!    `etcd`: a store's keys in an etcd cluster, and a client that bounds every call;
//! 4. `log`: entries, lines, segments, scanning, snapshots and the manifest, retiring;
//! 5. `namespace`: names and attributes, never file contents;
//! 6. `recovery` (replay, reconcile, salvage, check); `compact` (offline) and `pipeline`
//!    (commits, group-commit sync, apply, write-back, online compaction) above it;
//! 7. `fs`: the core, every operation's meaning, with no FUSE in sight; `inspect` (`log`,
//!    `stats`) beside it;
//! 8. `fuse` (the adapter) and `mounting` (mount(2) or fusermount3);
//! 9. `cli`: the command line.

pub mod caller;
pub mod cli;
pub mod compact;
pub mod disk;
pub mod error;
pub mod etcd;
pub mod fs;
pub mod fuse;
pub mod history;
pub mod inspect;
pub mod limits;
pub mod log;
pub mod memory;
pub mod mounting;
pub mod mounts;
pub mod name;
pub mod namespace;
pub mod options;
pub mod pipeline;
pub mod progress;
pub mod record;
pub mod recovery;
pub mod store;
pub mod transfer;
pub mod types;
pub mod view;
