//! The bootstrap: local, ssh: and exec: hops, cache, verification, errors.
