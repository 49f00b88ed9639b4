use ferry_protocol::problem;

/// Everything that can stop ferry from giving you a bridge. Each has a one-line message that
/// says what happened and what to do, an exit status of its own, and a Cockpit `problem` code.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{host}: host not found ({detail}); check the name, or its entry in your ssh config")]
    UnknownHost { host: String, detail: String },
    #[error("{host}: cannot connect ({detail}); is the machine up and sshd listening?")]
    Unreachable { host: String, detail: String },
    #[error("{host}: authentication failed ({detail}); check your key, agent or password")]
    AuthenticationFailed { host: String, detail: String },
    #[error("{host}: ssh asked \"{prompt}\" and nobody answered (no terminal, or the client declined); run ferry on a terminal, or use a key or an agent")]
    PromptUnanswered { host: String, prompt: String },
    #[error("{host}: host key is not known; connect once with `{ssh}` to check and accept it")]
    UnknownHostKey { host: String, ssh: String },
    #[error("{host}: HOST KEY HAS CHANGED; if that is expected, remove the old key with `ssh-keygen -R {host}`")]
    InvalidHostKey { host: String },
    #[error("the remote is {arch}, and this ferry carries bridges for {available} only; {hint}")]
    UnsupportedArch {
        arch: String,
        available: String,
        hint: String,
    },
    #[error("no directory on the remote is writable and allows executing files (tried: {}); free one of them or set XDG_CACHE_HOME there", tried.trim())]
    NoDirectory { tried: String },
    #[error("no space left in {dir} on the remote; the partial image was removed; free some space there, or set XDG_CACHE_HOME to a directory with room")]
    NoSpace { dir: String },
    #[error("{0}")]
    Verification(String),
    /// A program that ferry's loader needs (uname, dd, wc, a sha256 tool) is missing.
    #[error("{0}")]
    MissingTool(String),
    #[error("{0}")]
    NoShell(String),
    #[error("{0}")]
    Terminated(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{hop}: not allowed ({words})")]
    HopDenied { hop: String, words: String },
    #[error("{hop}: a password is required ({words}), and ferry cannot ask for it here")]
    PasswordRequired { hop: String, words: String },
    #[error("{hop}: no such user ({words})")]
    NoSuchUser { hop: String, words: String },
    #[error("{hop}: no such container ({words})")]
    NoContainer { hop: String, words: String },
    #[error("{hop}: the container is not running ({words}); start it with `{start}`")]
    ContainerStopped {
        hop: String,
        words: String,
        start: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{what}; {}", if said.is_empty() { "the remote printed nothing".to_owned() } else { format!("the remote printed: \"{said}\"") })]
    Timeout {
        /// What did not happen in time.
        what: String,
        /// What the remote printed meanwhile, as one trimmed line.
        said: String,
    },
    #[error("bad route: {0}")]
    BadRoute(String),
}

impl LaunchError {
    /// ferry's exit status for this failure (documented in README.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::UnknownHost { .. }
            | LaunchError::Unreachable { .. }
            | LaunchError::NoContainer { .. }
            | LaunchError::ContainerStopped { .. } => 201,
            LaunchError::AuthenticationFailed { .. }
            | LaunchError::PasswordRequired { .. }
            | LaunchError::PromptUnanswered { .. } => 202,
            LaunchError::UnknownHostKey { .. } | LaunchError::InvalidHostKey { .. } => 203,
            LaunchError::UnsupportedArch { .. } => 204,
            LaunchError::NoDirectory { .. } | LaunchError::NoSpace { .. } => 205,
            LaunchError::Verification(_) => 206,
            LaunchError::NoShell(_) | LaunchError::MissingTool(_) => 207,
            LaunchError::Terminated(_) => 208,
            LaunchError::Protocol(_) => 209,
            LaunchError::Internal(_) => 210,
            LaunchError::Timeout { .. } => 211,
            LaunchError::BadRoute(_) => 2,
            LaunchError::HopDenied { .. } => 212,
            LaunchError::NoSuchUser { .. } => 213,
        }
    }

    /// The Cockpit `problem` code for an `init` or `close` that reports this failure.
    pub fn problem(&self) -> &'static str {
        match self {
            LaunchError::UnknownHost { .. } | LaunchError::NoContainer { .. } => {
                problem::UNKNOWN_HOST
            }
            LaunchError::Unreachable { .. } | LaunchError::ContainerStopped { .. } => {
                problem::NO_HOST
            }
            LaunchError::AuthenticationFailed { .. }
            | LaunchError::PasswordRequired { .. }
            | LaunchError::PromptUnanswered { .. } => problem::AUTHENTICATION_FAILED,
            LaunchError::HopDenied { .. } => problem::ACCESS_DENIED,
            LaunchError::NoSuchUser { .. } => problem::NOT_FOUND,
            LaunchError::UnknownHostKey { .. } => problem::UNKNOWN_HOSTKEY,
            LaunchError::InvalidHostKey { .. } => problem::INVALID_HOSTKEY,
            LaunchError::UnsupportedArch { .. }
            | LaunchError::NoDirectory { .. }
            | LaunchError::NoSpace { .. }
            | LaunchError::NoShell(_)
            | LaunchError::MissingTool(_) => problem::NO_COCKPIT,
            LaunchError::Verification(_) | LaunchError::Internal(_) => problem::INTERNAL_ERROR,
            LaunchError::Terminated(_) => problem::TERMINATED,
            LaunchError::Protocol(_) => problem::PROTOCOL_ERROR,
            LaunchError::Timeout { .. } => problem::TIMEOUT,
            LaunchError::BadRoute(_) => problem::NOT_SUPPORTED,
        }
    }

    /// Classify what `ssh` printed when it could not connect; `ssh` is the command a user would
    /// type to reach the same host.
    pub(crate) fn from_ssh(host: &str, ssh: &str, text: &str) -> Self {
        let detail = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
            .unwrap_or("ssh failed")
            .trim_start_matches("ssh: ")
            .to_owned();
        let host = host.to_owned();
        if text.contains("IDENTIFICATION HAS CHANGED") || text.contains("POSSIBLE DNS SPOOFING") {
            LaunchError::InvalidHostKey { host }
        } else if text.contains("Host key verification failed")
            || text.contains("No ED25519 host key is known")
            || text.contains("host key is known")
        {
            LaunchError::UnknownHostKey {
                host,
                ssh: ssh.to_owned(),
            }
        } else if text.contains("Could not resolve hostname")
            || text.contains("Name or service not known")
        {
            LaunchError::UnknownHost { host, detail }
        } else if text.contains("Permission denied (")
            || text.contains("Too many authentication failures")
        {
            LaunchError::AuthenticationFailed { host, detail }
        } else {
            LaunchError::Unreachable { host, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ssh_errors() {
        let e = LaunchError::from_ssh(
            "h",
            "ssh h",
            "ssh: Could not resolve hostname h: Name or service not known\r\n",
        );
        assert_eq!((e.exit_code(), e.problem()), (201, "unknown-host"));
        let e = LaunchError::from_ssh(
            "h",
            "ssh h",
            "ssh: connect to host h port 22: Connection refused",
        );
        assert_eq!((e.exit_code(), e.problem()), (201, "no-host"));
        let e = LaunchError::from_ssh("h", "ssh h", "u@h: Permission denied (publickey).");
        assert_eq!((e.exit_code(), e.problem()), (202, "authentication-failed"));
        let e = LaunchError::from_ssh("h", "ssh h", "No ED25519 host key is known for h and you have requested strict checking.\nHost key verification failed.");
        assert_eq!((e.exit_code(), e.problem()), (203, "unknown-hostkey"));
        let e = LaunchError::from_ssh(
            "h",
            "ssh h",
            "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nHost key verification failed.",
        );
        assert_eq!((e.exit_code(), e.problem()), (203, "invalid-hostkey"));
        assert!(!e.to_string().contains('\n'));
    }
}
