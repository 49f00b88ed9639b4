//! `docker:CONTAINER[:USER]`: `docker exec -i` into a running container.

use crate::transport::Ended;
use crate::LaunchError;

/// The command prefix: `docker exec -i [--user USER] CONTAINER`.
pub(crate) fn argv(container: &str, user: Option<&str>) -> Vec<String> {
    super::container::argv("docker", container, user)
}

/// Name a failure from docker's own words.
pub(crate) fn failure(
    container: &str,
    hop: &str,
    stderr: &str,
    ended: Ended,
) -> Option<LaunchError> {
    super::container::failure("docker", container, hop, stderr, ended)
}
