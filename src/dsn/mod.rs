//! Delivery status notifications (RFC 3461): the parameters a sender gives
//! on MAIL and RCPT, which the queue keeps with each message and recipient.

pub mod params;

pub use params::{parse_envid, xtext_decode, xtext_encode, Notify, Orcpt, ParamError, Ret};
