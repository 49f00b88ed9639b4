//! `su:USER`: su(1). It runs the command through the user's login shell, so the rest of the
//! route becomes one command line (as for ssh).

use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `su USER -c` (the command line follows as one argument).
pub(crate) fn argv(user: &str) -> Vec<String> {
    vec!["su".to_owned(), user.to_owned(), "-c".to_owned()]
}

/// Name a failure from su's own words.
pub(crate) fn failure(hop: &str, stderr: &str, _ended: Ended) -> Option<LaunchError> {
    let words = super::line_with(stderr, "su:")?;
    let hop = hop.to_owned();
    if words.contains("does not exist") || words.contains("Unknown id") {
        Some(LaunchError::NoSuchUser { hop, words })
    } else if words.contains("must be run from a terminal")
        || words.contains("Authentication failure")
    {
        Some(LaunchError::PasswordRequired { hop, words })
    } else if words.contains("Permission denied") || words.contains("not allowed") {
        Some(LaunchError::HopDenied { hop, words })
    } else {
        None
    }
}
