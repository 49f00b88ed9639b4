//! `doas` and `doas:USER`: OpenBSD's doas (Debian's `opendoas`), never prompting (`-n`).

use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `doas -n [-u USER] --`.
pub(crate) fn argv(user: Option<&str>) -> Vec<String> {
    let mut v = vec!["doas".to_owned(), "-n".to_owned()];
    if let Some(u) = user {
        v.extend(["-u".to_owned(), u.to_owned()]);
    }
    v.push("--".to_owned());
    v
}

/// Name a failure from doas's own words.
pub(crate) fn failure(hop: &str, stderr: &str, _ended: Ended) -> Option<LaunchError> {
    let words = super::line_with(stderr, "doas:")?;
    let hop = hop.to_owned();
    if words.contains("unknown user") || words.contains("no passwd entry") {
        Some(LaunchError::NoSuchUser { hop, words })
    } else if words.contains("Authentication required") || words.contains("a password is required")
    {
        Some(LaunchError::PasswordRequired { hop, words })
    } else if words.contains("not permitted") || words.contains("Operation not permitted") {
        Some(LaunchError::HopDenied { hop, words })
    } else {
        None
    }
}
