//! ferry's own control message for self-replication: `ferry-hop`.
//!
//! Not part of Cockpit's protocol. Only the launcher sends it, and only as the first message a
//! bridge receives (before any `init`); a Cockpit client never sees it. The exchange:
//!
//! ```text
//! launcher -> bridge  {"command": "ferry-hop", "argv": [...], "nonce": "...",
//!                      "images": {"x86_64": "SHA256", ...}}
//! bridge -> launcher  {"command": "ferry-hop", "arch": "x86_64", "cached": false,
//!                      "payload-bytes": N, "dir": "..."}              (the next bridge runs)
//!                 or  {"command": "ferry-hop", "problem": "...", "reason": "...",
//!                      "message": "...", "stderr": "...", "exit-status": N}   (it does not)
//! ```
//!
//! `argv` runs the stage1 loader on the next hop (the launcher composes it; the bridge runs it
//! as given, without a shell); `nonce` and `images` are that loader's invocation. After a
//! success the bridge relays frames both ways unchanged, so the next thing the launcher reads
//! is the next bridge's `init`. After a failure the bridge exits.

/// The command name of the message.
pub const HOP: &str = "ferry-hop";

/// The channel of an image sent along with a request (`"image": {"arch": A, "codec": C,
/// "size": N}`): N bytes in data frames, for a next hop whose architecture differs from the
/// bridge's. The launcher sends it after a reply with `"need-image": true` (`reason` `arch`,
/// `detail` the architecture, `decoders` what the far side can decode: `zstd,gzip`), encoded
/// for those decoders; the far side's loader checks the sha256 after decoding, as always.
pub const IMAGE_CHANNEL: &str = "ferry-image";

/// Why a hop failed, in the `reason` field of a failed `ferry-hop` reply.
pub mod reason {
    /// The hop's program could not be started (`detail`: the OS error).
    pub const SPAWN: &str = "spawn";
    /// The hop's command ended before the loader answered (see `exit-status`, `stderr`).
    pub const CLOSED: &str = "closed";
    /// The far side's CPU needs an image this bridge cannot give (`detail`: the arch).
    pub const ARCH: &str = "arch";
    /// No usable directory on the far side (`detail`: what was tried).
    pub const DIR: &str = "dir";
    /// The image arrived corrupted.
    pub const CORRUPT: &str = "corrupt";
    /// A cached image did not match its sha256.
    pub const TAMPERED: &str = "tampered";
    /// A program the far side's loader needs is missing (`detail`: its name).
    pub const TOOL: &str = "tool";
    /// The far side's directory is full (`detail`: the directory).
    pub const SPACE: &str = "space";
    /// This bridge's own executable does not match the image it was asked to send.
    pub const SELF_IMAGE: &str = "self-image";
    /// The loader did not answer in time.
    pub const TIMEOUT: &str = "timeout";
    /// The request or the loader's answer was malformed.
    pub const PROTOCOL: &str = "protocol";
}
