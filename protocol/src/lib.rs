//! The Cockpit protocol as ferry speaks it: frames and control messages.
//!
//! A frame on the wire is `LEN\nCHANNEL\nPAYLOAD`, where `LEN` is decimal and counts
//! `CHANNEL\n` plus the payload. The control channel is the empty string; its payload is one
//! JSON object with a `command` field.
//!
//! This crate is shared by the shipped bridge, the launcher, the tests and the benchmark, so it
//! stays small: framing ([`FrameCodec`]), the [`Frame`] type, and helpers for control messages
//! ([`control`]). It does no I/O of its own.

pub mod control;
mod frame;
pub mod hop;
pub mod problem;
pub mod signal;

pub use frame::{Frame, FrameCodec, FrameError, MAX_FRAME_SIZE, MAX_SIZE_DIGITS};
