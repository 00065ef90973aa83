//! Failures a user can act on, each with its own documented exit code.

/// Exit codes (also in README.md):
/// 0 success, 1 unexpected error, 2 bad usage or unknown pid, 3 missing privileges,
/// 4 kernel lacks what leaktrace needs (tracefs, BPF program load).
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Privilege(String),
    Kernel(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            Self::Privilege(_) => 3,
            Self::Kernel(_) => 4,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m) | Self::Privilege(m) | Self::Kernel(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Failure {}
