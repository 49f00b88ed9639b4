//! `flatpak-host`: `flatpak-spawn --host`, to leave a Flatpak sandbox for its host.

use super::Said;
use crate::transport::Ended;
use crate::LaunchError;

/// Where Debian's flatpak-xdg-utils keeps the program when it is not on `PATH` (outside a
/// sandbox; inside one it is `/usr/bin/flatpak-spawn`).
const LIBEXEC: &str = "/usr/libexec/flatpak-xdg-utils/flatpak-spawn";

/// The command prefix: `flatpak-spawn --host`.
pub(crate) fn argv() -> Vec<String> {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| d.join("flatpak-spawn").is_file())
    });
    let program = if !on_path && std::path::Path::new(LIBEXEC).is_file() {
        LIBEXEC
    } else {
        "flatpak-spawn"
    };
    vec![program.to_owned(), "--host".to_owned()]
}

/// Name a failure from flatpak-spawn's own words (it cannot reach the host's session helper).
pub(crate) fn failure(hop: &str, stderr: &str, _ended: Ended) -> Option<LaunchError> {
    let (words, said) = super::words(
        stderr,
        &[
            ("org.freedesktop.Flatpak", Said::NotAllowed),
            ("Can't find bus", Said::NotAllowed),
            ("session bus", Said::NotAllowed),
        ],
    )?;
    Some(super::said_error(hop, words, said, String::new))
}
