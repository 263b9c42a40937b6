//! DTLS retransmission, driven from the listener's tick: the one call the `openssl` crate
//! does not wrap (`DTLSv1_handle_timeout`, a macro over `SSL_ctrl`), and so the one place
//! with `unsafe` in the secure listener.
#![allow(unsafe_code)]

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;

/// `DTLS_CTRL_HANDLE_TIMEOUT` in OpenSSL's `ssl.h` (stable since 1.0.0; not exported by
/// `openssl-sys`).
const DTLS_CTRL_HANDLE_TIMEOUT: std::os::raw::c_int = 74;

/// Retransmits the last handshake flight if its timer has expired. `Some(true)`: it
/// retransmitted (the datagrams are in the session's outbox); `Some(false)`: the timer has
/// not expired or is not running; `None`: too many retransmissions, give up on this peer.
pub fn handle_timeout(ssl: &SslRef) -> Option<bool> {
    // SAFETY: `ssl.as_ptr()` is a valid `SSL*` for as long as the `&SslRef` borrow, which
    // outlives the call, and the listener thread that owns the session is the only one using
    // it. DTLS_CTRL_HANDLE_TIMEOUT reads no `larg` and no `parg` (NULL is what the
    // `DTLSv1_handle_timeout` macro passes); the BIO it may write to is the session's own
    // adapter, owned by the same `SslStream` and not borrowed elsewhere during the call.
    let r = unsafe { openssl_sys::SSL_ctrl(ssl.as_ptr(), DTLS_CTRL_HANDLE_TIMEOUT, 0, std::ptr::null_mut()) };
    match r {
        0 => Some(false),
        r if r > 0 => Some(true),
        _ => None,
    }
}
