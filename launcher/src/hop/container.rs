//! What `podman:` and `docker:` hops share: `ENGINE exec -i [--user USER] CONTAINER`, run in
//! the container with the container's own OCI runtime.

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
    let words = super::line_with(stderr, "rror")?;
    let hop = hop.to_owned();
    let lower = words.to_lowercase();
    if lower.contains("no such container") || lower.contains("no container with name or id") {
        Some(LaunchError::NoContainer { hop, words })
    } else if lower.contains("is not running")
        || lower.contains("container state improper")
        || lower.contains("only create exec sessions on running containers")
    {
        Some(LaunchError::ContainerStopped {
            hop,
            words,
            start: format!("{engine} start {container}"),
        })
    } else if lower.contains("no such user")
        || lower.contains("unable to find user")
        || lower.contains("no matching entries in passwd")
    {
        Some(LaunchError::NoSuchUser { hop, words })
    } else if lower.contains("permission denied") {
        Some(LaunchError::HopDenied { hop, words })
    } else {
        None
    }
}
