//! The two front ends. Each speaks its protocol only: both build the same
//! [`Transaction`](crate::transaction::Transaction) through one builder, take their
//! connections from one [`Limiter`](crate::limiter::Limiter), and turn the gateway's
//! [`Reply`](crate::reply::Reply) into their protocol's answer.

pub mod milter;
pub mod smtp;
