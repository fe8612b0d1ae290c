//! The commit pipeline: every change of the store goes through `Pipeline::commit`.
//!
//! Order of events for one commit (FORMAT.md, "Writing and syncing"):
//! 1. holding the log writer (which orders commits): under the state lock, check the change
//!    against the namespace and give it the next sequence number; with the state lock released,
//!    encode its line and append it to the log (`write`, page cache only); under the state lock
//!    again, apply it to the namespace, keep its bytes in `pending`, queue it. Lookups and
//!    getattrs take only the state lock, so they never wait for the log's I/O;
//! 2. the sync thread takes everything queued, `fdatasync`s the log once for all of it
//!    (group commit), and answers the callers waiting for those sequence numbers;
//! 3. only then does the apply thread change the backing tree (write-ahead rule), and drop
//!    the bytes from `pending`. Until then readers are served from `pending`. The two threads
//!    are separate so that the next sync starts while the last batch is being applied.
//!
//! A failed log sync is fatal for the store: the kernel may have dropped the dirty pages, so a
//! retry that "succeeds" would be a lie. The store turns read-only until remounted.

mod apply;
mod commits;
mod compactor;
mod replica;
mod segments;
mod state;
mod sync;
mod tree;
mod version;
mod writeback;

pub use replica::from_replica;
pub use state::{Committed, CompactPolicy, Pipeline, Replica, Threads, Waiter};
pub use version::Read;
