//! Local names: how `root`, `www-data` or `cron@<this host>` become real
//! addresses. `/etc/aliases` ([`aliases`]) first, then `[local.rewrite]`,
//! then `admin_address` as a catch-all, else `name@<sender_domain>` (by
//! default `/etc/mailname`, else the host name). See `config::Local::resolve`.

//! Outbound mapping of sender addresses ([`generic`]) is the other half:
//! what leaves this machine carries an address the world accepts.

pub mod aliases;
pub mod generic;

pub use aliases::{AliasError, Aliases, Target};
pub use generic::Generic;
