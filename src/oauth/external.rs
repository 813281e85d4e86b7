//! (placeholder with the API of the external token sources; being written)
use std::path::Path;
use std::time::Duration;

use super::{Bearer, TokenError};
use crate::config::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp(u64);
pub async fn command(_argv: &[String], _timeout: Duration) -> Result<Secret, TokenError> {
    Err(TokenError::Dead("todo".into()))
}
pub async fn file(_path: &Path) -> Result<(Secret, FileStamp), TokenError> {
    Err(TokenError::Dead("todo".into()))
}
pub fn stamp(_path: &Path) -> Option<FileStamp> {
    None
}
pub async fn socket(_path: &Path, _user: &str, _timeout: Duration) -> Result<Bearer, TokenError> {
    Err(TokenError::Dead("todo".into()))
}
pub async fn http(
    _client: &reqwest::Client,
    _url: &Secret,
    _account: &str,
    _timeout: Duration,
) -> Result<Bearer, TokenError> {
    Err(TokenError::Dead("todo".into()))
}
