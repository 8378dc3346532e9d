//! One integration test binary (each `tests/*.rs` would link separately, and links are
//! the slow part of a build on two cores). One module per area.

mod check;
mod classifier;
mod cli;
mod content;
mod documents;
mod faults;
mod frontends;
mod hostile;
mod hostile_envelope;
mod hostile_session;
mod hostile_side;
mod hostile_state;
mod milter;
mod milter_raw;
mod next_hop_step;
mod operate;
mod parity;
mod postfix;
mod postgres;
mod privacy;
mod python_parity;
mod relay;
mod review;
mod rules;
mod session_duplex;
mod split;
mod store;
mod support;
