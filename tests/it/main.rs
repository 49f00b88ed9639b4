//! ferry's integration tests: one binary, real components (see ARCHITECTURE.md, "Testing").

mod harness;

mod bootstrap;
mod conformance;
mod hops;
