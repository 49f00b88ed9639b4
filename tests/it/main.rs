//! ferry's integration tests: one binary, real components (see ARCHITECTURE.md, "Testing").

mod harness;

mod bootstrap;
mod cockpit_ssh;
mod cockpit_ws;
mod conformance;
mod handshake;
mod hop_words;
mod hops;
mod lifecycle;
mod loader;
mod packages;
mod prompts;
mod shipped;
mod ssh_config;
mod superuser;
