//! End-to-end tests of the built `ferry-bridge` binary: frames in, frames out.

mod common;
mod dbus;
mod flow;
mod fs;
mod interact;
mod packages;
mod protocol;
mod session;
mod stream;
