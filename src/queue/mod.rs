//! The queue: what a stored message is ([`envelope`]), where it lives ([`store`]),
//! and what is remembered of messages that left it ([`history`]).

pub mod envelope;
pub mod history;
pub mod store;

pub use envelope::{Envelope, Recipient, State};
pub use history::Finished;
pub use store::{Store, StoreError};
