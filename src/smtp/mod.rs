//! The inbound side: SMTP grammar and DATA rules (pure, fuzzable), the session
//! loop, and the listener that accepts connections.

pub mod address;
pub mod data;
pub mod grammar;
mod lexical;
pub mod reply;
pub mod server;
pub mod session;
pub mod submission;
pub mod tls;
