//! `sudo` and `sudo:USER`: sudo(8), never prompting (`-n`).

use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `sudo -n [-u USER] --`.
pub(crate) fn argv(user: Option<&str>) -> Vec<String> {
    let mut v = vec!["sudo".to_owned(), "-n".to_owned()];
    if let Some(u) = user {
        v.extend(["-u".to_owned(), u.to_owned()]);
    }
    v.push("--".to_owned());
    v
}

/// Name a failure from sudo's own words (its messages are not translated in the C locale the
/// loader's environment usually has; the English ones are matched, anything else falls through).
pub(crate) fn failure(hop: &str, stderr: &str, _ended: Ended) -> Option<LaunchError> {
    let words = super::line_with(stderr, "sudo:")?;
    let hop = hop.to_owned();
    if words.contains("unknown user") {
        Some(LaunchError::NoSuchUser { hop, words })
    } else if words.contains("a password is required") {
        Some(LaunchError::PasswordRequired { hop, words })
    } else if words.contains("not in the sudoers file")
        || words.contains("is not allowed to")
        || words.contains("may not run sudo")
        || words.contains("must have a tty")
    {
        Some(LaunchError::HopDenied { hop, words })
    } else {
        None
    }
}
