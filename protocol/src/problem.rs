//! Cockpit `problem` codes used by ferry, as constants so that a typo is a compile error.

pub const INTERNAL_ERROR: &str = "internal-error";
pub const NO_COCKPIT: &str = "no-cockpit";
pub const NO_SESSION: &str = "no-session";
pub const ACCESS_DENIED: &str = "access-denied";
pub const AUTHENTICATION_FAILED: &str = "authentication-failed";
pub const NOT_FOUND: &str = "not-found";
pub const TERMINATED: &str = "terminated";
pub const TIMEOUT: &str = "timeout";
pub const UNKNOWN_HOSTKEY: &str = "unknown-hostkey";
pub const INVALID_HOSTKEY: &str = "invalid-hostkey";
pub const UNKNOWN_HOST: &str = "unknown-host";
pub const NO_HOST: &str = "no-host";
pub const PROTOCOL_ERROR: &str = "protocol-error";
pub const NOT_SUPPORTED: &str = "not-supported";
pub const CHANGE_CONFLICT: &str = "change-conflict";
pub const TOO_LARGE: &str = "too-large";
pub const NOT_DIRECTORY: &str = "not-directory";
pub const AUTHENTICATION_UNAVAILABLE: &str = "authentication-unavailable";
