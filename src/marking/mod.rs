//! Protective markings: the model and ranking (`level`), the one grammar for marking
//! strings (`grammar`, after one normalisation, `normalize`) and the EPMS pairs it hands on
//! (`epms`), one extractor per place a marking can stand (`places`), the
//! senders of forwarded and quoted correspondence (`history`), and the
//! MIME walk that applies them to a message (`classify`).

pub mod calendar;
pub mod classify;
pub mod documents;
pub mod epms;
pub mod grammar;
pub mod history;
pub mod level;
pub mod normalize;
pub mod places;
pub mod render;

pub use level::{Level, Marking, UNMARKED};
