//! The core of the filesystem: what each operation means, with no FUSE in sight. The FUSE
//! adapter (`fuse/`) forwards to `RecordFs`; tests call it directly too.
//!
//! A handle that writes works on its own copy of the file; the copy is committed as a whole
//! at flush (close), fsync, or when the file is renamed. Readers hold the version that was
//! committed when they opened (a `Version`). See README, "Semantics".

mod attrs;
mod commit;
mod core;
mod handles;
mod io;
mod links;
mod names;
mod rules;
mod state;
mod xattrs;

#[cfg(feature = "failpoints")]
pub use core::between_commit_and_answer;
pub use rules::display_name;
pub use state::{DirEntry, Invalidation, RecordFs, SetAttr, Stat, StatFs, Ticket, WriteBy};
