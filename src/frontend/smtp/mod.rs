//! The SMTP front end: the accept loop, the session (read loop, verbs, end of DATA), the
//! command and DATA readers, and inbound STARTTLS.

mod cert_expiry;
pub mod command;
pub mod data;
pub mod server;
pub mod session;
pub mod tls;
