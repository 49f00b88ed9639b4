//! `su:USER`: su(1). It runs the command through the user's login shell, so the rest of the
//! route becomes one command line (as for ssh).

use super::Said;
use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `su USER -c` (the command line follows as one argument).
pub(crate) fn argv(user: &str) -> Vec<String> {
    vec!["su".to_owned(), user.to_owned(), "-c".to_owned()]
}

/// Name a failure from su's own words.
pub(crate) fn failure(hop: &str, stderr: &str, _ended: Ended) -> Option<LaunchError> {
    let (words, said) = super::words(
        stderr,
        &[
            ("does not exist", Said::NoUser),
            ("must be run from a terminal", Said::Password),
            ("Authentication failure", Said::Password),
            ("Permission denied", Said::NotAllowed),
        ],
    )?;
    Some(super::said_error(hop, words, said, String::new))
}
