//! What `podman:` and `docker:` hops share: `ENGINE exec -i [--user USER] CONTAINER`, run in
//! the container with the container's own OCI runtime.

use super::Said;
use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix.
pub(crate) fn argv(engine: &str, container: &str, user: Option<&str>) -> Vec<String> {
    let mut v = vec![engine.to_owned(), "exec".to_owned(), "-i".to_owned()];
    if let Some(u) = user {
        v.extend(["--user".to_owned(), u.to_owned()]);
    }
    v.push(container.to_owned());
    v
}

/// Name a failure from the engine's own words.
pub(crate) fn failure(
    engine: &str,
    container: &str,
    hop: &str,
    stderr: &str,
    _ended: Ended,
) -> Option<LaunchError> {
    let (words, said) = super::words(
        stderr,
        &[
            ("no such container", Said::NoContainer),
            ("no container with name or id", Said::NoContainer),
            ("is not running", Said::Stopped),
            (
                "only create exec sessions on running containers",
                Said::Stopped,
            ),
            ("container state improper", Said::Stopped),
            // runc, when the container's process is gone but the engine still thinks it runs.
            ("cannot exec in a stopped container", Said::Stopped),
            ("unable to find user", Said::NoUser),
            ("no matching entries in passwd", Said::NoUser),
            ("permission denied", Said::NotAllowed),
        ],
    )?;
    Some(super::said_error(hop, words, said, || {
        format!("{engine} start {container}")
    }))
}
