//! `podman:CONTAINER[:USER]`: `podman exec -i` into a running container.

use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `podman exec -i [--user USER] CONTAINER`.
pub(crate) fn argv(container: &str, user: Option<&str>) -> Vec<String> {
    super::container::argv("podman", container, user)
}

/// Name a failure from podman's own words.
pub(crate) fn failure(
    container: &str,
    hop: &str,
    stderr: &str,
    ended: Ended,
) -> Option<LaunchError> {
    super::container::failure("podman", container, hop, stderr, ended)
}
