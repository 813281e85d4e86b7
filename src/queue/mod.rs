//! The queue: what a stored message is ([`envelope`]) and where it lives ([`store`]).

pub mod envelope;
pub mod store;

pub use envelope::{Envelope, Recipient, State};
pub use store::{Store, StoreError};
