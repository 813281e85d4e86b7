//! Exit codes from sysexits.h, which programs calling `sendmail` interpret.

pub const EX_OK: u8 = 0;
pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOINPUT: u8 = 66;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
pub const EX_OSERR: u8 = 71;
pub const EX_CANTCREAT: u8 = 73;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_PROTOCOL: u8 = 76;
pub const EX_NOPERM: u8 = 77;
pub const EX_CONFIG: u8 = 78;
