//! The SMTP front end (server session, DATA reader, replies) and the next-hop client.

mod cert_expiry;
pub mod command;
pub mod data;
pub mod next_hop;
pub mod reply;
pub mod server;
pub mod session;
pub mod tls;
