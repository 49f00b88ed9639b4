//! `sudo` and `sudo:USER`: sudo(8), never prompting (`-n`).

use super::Said;
use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `sudo -n [-u USER] --`.
pub(crate) fn argv(user: Option<&str>) -> Vec<String> {
    super::no_prompt_argv("sudo", user)
}

/// Name a failure from sudo's own words (English; a translated message falls through to the
/// generic one, which still quotes it).
pub(crate) fn failure(hop: &str, stderr: &str, _ended: Ended) -> Option<LaunchError> {
    let (words, said) = super::words(
        stderr,
        &[
            ("unknown user", Said::NoUser),
            ("a password is required", Said::Password),
            ("is not in the sudoers file", Said::NotAllowed),
            ("is not allowed to", Said::NotAllowed),
            ("may not run sudo", Said::NotAllowed),
            ("must have a tty", Said::NotAllowed),
        ],
    )?;
    Some(super::said_error(hop, words, said, String::new))
}
