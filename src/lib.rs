//! recordfs: a FUSE filesystem of JSON records with atomic, durable, write-through commits.
//!
//! Data flows one way: syscall → `fuse` (adapter) → `files` (the core) → `commit` (the
//! pipeline) → `log` → `store` (the backing files). `recovery` rebuilds the state at mount;
//! `namespace` holds names and attributes. Nothing below `files` knows about FUSE.

pub mod caller;
pub mod cli;
pub mod compact;
pub mod disk;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod inspect;
pub mod limits;
pub mod log;
pub mod mounting;
pub mod namespace;
pub mod options;
pub mod pipeline;
pub mod progress;
pub mod record;
pub mod recovery;
pub mod store;
pub mod types;
