//! Differential conformance: the same sessions against ferry-bridge and cockpit-bridge.
