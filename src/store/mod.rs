//! Where markgate keeps what outlives a transaction. Today: quarantined messages as files
//! (`crate::quarantine`), tracking records as daily JSONL files (`crate::tracking`) and the
//! SQLite index over them (`index`), all under the state dir. A shared backend for several
//! instances (PostgreSQL) plugs in here later; no SQL lives outside this module.

pub mod address_match;
pub mod index;
