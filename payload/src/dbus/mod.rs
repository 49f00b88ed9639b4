//! D-Bus for the `dbus-json3` channel, without a D-Bus library: the wire format is written
//! here, small enough for the shipped image, and driven by signatures that arrive as JSON at
//! run time.
//!
//! - [`signature`]: type signatures parsed into [`signature::Type`] trees;
//! - [`marshal`]: values on the wire to and from Cockpit's JSON mapping;
//! - [`message`]: whole messages (header, fields, body);
//! - [`connection`]: addresses, EXTERNAL authentication, `Hello`, reply matching;
//! - [`introspect`]: introspection XML to and from `meta` JSON;
//! - `internal`: the objects of the bridge's internal bus (`/user`, `/superuser`, ...);
//! - `channel`: the `dbus-json3` channel itself.

pub(crate) mod channel;
pub mod connection;
pub(crate) mod internal;
pub mod introspect;
pub mod marshal;
pub mod message;
pub mod signature;
