//! Confining worker processes. (First version: the worker runs as a plain
//! child process with a cleared environment in its scratch dir; the kernel
//! layers come next.)

use std::path::Path;

/// How workers are confined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxConfig {}

/// The command that starts `binary` confined as `cfg` says.
pub fn command(
    _cfg: &SandboxConfig,
    binary: &Path,
    _scratch: &Path,
) -> Result<tokio::process::Command, String> {
    Ok(tokio::process::Command::new(binary))
}

/// The layers in force, for `g2 status`.
pub fn describe(_cfg: &SandboxConfig) -> Vec<String> {
    vec!["none: workers run as plain child processes".into()]
}
