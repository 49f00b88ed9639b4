//! `doas` and `doas:USER`: OpenBSD's doas (Debian's `opendoas`), never prompting (`-n`).

use super::Said;
use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `doas -n [-u USER] --`.
pub(crate) fn argv(user: Option<&str>) -> Vec<String> {
    super::no_prompt_argv("doas", user)
}

/// Name a failure from doas's own words.
pub(crate) fn failure(hop: &str, stderr: &str, _ended: Ended) -> Option<LaunchError> {
    let (words, said) = super::words(
        stderr,
        &[
            ("doas: unknown user", Said::NoUser),
            ("doas: Authentication required", Said::Password),
            ("doas: a password is required", Said::Password),
            ("doas: Operation not permitted", Said::NotAllowed),
            ("doas: not permitted", Said::NotAllowed),
        ],
    )?;
    Some(super::said_error(hop, words, said, String::new))
}
