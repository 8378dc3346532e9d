//! The message being judged: its spooled bytes and the reduced view the classifier reads,
//! and its text decoded as a reader's software decodes it (`charsets`, `words`).

pub mod charsets;
pub mod own_headers;
pub mod params;
pub mod readable;
pub mod skeleton;
pub mod spool;
pub mod words;

pub use spool::Spool;
