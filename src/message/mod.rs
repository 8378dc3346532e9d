//! The message being judged: its spooled bytes and the reduced view the classifier reads.

pub mod own_headers;
pub mod params;
pub mod readable;
pub mod skeleton;
pub mod spool;

pub use spool::Spool;
