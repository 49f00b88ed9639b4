//! ferry's launcher: reach a machine through a route of hops, boot a bridge there, and use it.
//!
//! - [`Hop`] and [`Route`]: `local`, `ssh:[USER@]HOST[:PORT]`, `exec:PROGRAM [ARGS...]`, and how a
//!   chain of them becomes one command.
//! - [`transport`]: starting that command (system OpenSSH with ferry's own master connection for
//!   an ssh first hop, a plain child process otherwise).
//! - [`boot`]: the host side of the stage1 handshake, with the embedded [`Images`]; legs after
//!   the first are started by the bridge before them (`chain`, self-replication).
//! - [`run`] and [`connect`]: the two ways of using the booted bridge.
//!
//! Every failure is a [`LaunchError`], which knows its exit status and Cockpit `problem` code.

mod boot;
mod chain;
mod client;
pub mod cockpit_ssh;
mod error;
mod hop;
mod images;
pub mod local_packages;
pub mod login_shell;
pub mod prompt;
pub mod ssh;
pub mod stderr;
pub mod transport;

pub use boot::{boot, BootOptions, Meter, Session};
pub use chain::LegStats;
pub use client::{connect, run, Stats};
pub use error::LaunchError;
pub use hop::{Hop, HopParseError, Route};
pub use images::{Image, Images};
