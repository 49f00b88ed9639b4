//! Replacements for the few musl functions whose only part in the bridge is to drag in
//! `printf` (its whole format engine, floating point included: about 8.7 KB of the raw image).
//!
//! musl's `pthread_setname_np` formats `/proc/self/task/%d/comm` with `snprintf` for the case
//! of another thread; std only ever names the calling thread (tokio's blocking-pool workers),
//! which is a plain `prctl(PR_SET_NAME)`. Defining the function here keeps musl's from being
//! linked. (`openpty` was the other user: see [`crate::pty::open`].)

/// `pthread_setname_np(3)` for the calling thread, as musl implements it: `ERANGE` for a name
/// longer than 15 bytes, otherwise `prctl(PR_SET_NAME)`. Naming another thread is not
/// supported here (`ENOTSUP`): nothing in the bridge does.
///
/// # Safety
/// `name` must point to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pthread_setname_np(
    thread: libc::pthread_t,
    name: *const libc::c_char,
) -> libc::c_int {
    // SAFETY: the caller passes a NUL-terminated name; pthread_self and prctl have no memory
    // effects beyond reading it.
    unsafe {
        if libc::strnlen(name, 16) > 15 {
            return libc::ERANGE;
        }
        if thread != libc::pthread_self() {
            return libc::ENOTSUP;
        }
        if libc::prctl(libc::PR_SET_NAME, name as libc::c_ulong, 0, 0, 0) != 0 {
            return std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL);
        }
    }
    0
}
