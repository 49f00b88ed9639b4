//! End-to-end tests of the built `ferry-bridge` binary: frames in, frames out.

mod common;
mod dbus;
mod flow;
mod interact;
mod protocol;
mod stream;
