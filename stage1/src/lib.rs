//! ferry's stage1: the POSIX sh loader (`stage1.sh`) and the code that drives it.
//!
//! The loader reaches the remote as the command argument of a hop (`sh -c STAGE1 ferry NONCE
//! ARCH=SHA256...`). It probes the remote in one go, reuses a verified cached bridge or asks for
//! one, checks the sha256 of what it received, and `exec`s it. [`send`] is the other end: it
//! reads the loader's lines, answers with exactly the bytes asked for, and returns once only the
//! bridge's frames remain on the stream.
//!
//! Both the launcher and a running bridge (when it starts a copy of itself elsewhere) use this
//! crate, which is why it stays pure Rust and knows nothing about compression: an
//! [`ImageSource`] hands it bytes already encoded.

mod script;
mod sender;

pub use script::{script, Invocation, DEFAULT_TIMEOUT, SOURCE};
pub use sender::{send, Booted, Codec, ImageSource, Stage1Error, Tools};
