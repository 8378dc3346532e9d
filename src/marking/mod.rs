//! Protective markings: the model and ranking (`level`), the one grammar for marking
//! strings (`grammar`), one extractor per place a marking can stand (`places`), and the
//! MIME walk that applies them to a message (`classify`).

pub mod classify;
pub mod grammar;
pub mod level;
pub mod places;

pub use level::{Level, Marking, UNMARKED};
