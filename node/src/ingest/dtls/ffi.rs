//! The two DTLS calls the `openssl` crate does not wrap, and so the one place with `unsafe`
//! in the secure listener: `DTLSv1_listen` (the stateless cookie exchange) and
//! `DTLSv1_handle_timeout` (a macro over `SSL_ctrl`: retransmission, driven from a tick).
#![allow(unsafe_code)]

use std::os::raw::c_int;

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;
use openssl_sys::{BIO_ADDR, SSL};

/// `DTLS_CTRL_HANDLE_TIMEOUT` in OpenSSL's `ssl.h` (stable since 1.0.0; not exported by
/// `openssl-sys`).
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

extern "C" {
    // In libssl since 1.1.0 with these types (`ssl.h`); `openssl-sys` links it.
    fn DTLSv1_listen(s: *mut SSL, client: *mut BIO_ADDR) -> c_int;
    // In libcrypto since 1.1.0 (`bio.h`).
    fn BIO_ADDR_new() -> *mut BIO_ADDR;
    fn BIO_ADDR_free(ap: *mut BIO_ADDR);
}

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

/// What `DTLSv1_listen` made of the datagram in the listening session's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// A ClientHello with a valid cookie: the `Ssl` is now that peer's session, past the
    /// cookie exchange, with the ClientHello buffered for its next `do_handshake`.
    Verified,
    /// Anything else: a HelloVerifyRequest was written (a ClientHello without a cookie) or
    /// the datagram was dropped (a wrong cookie, not a ClientHello).
    NotYet,
    /// An internal error; the `Ssl` should not be used again.
    Failed,
}

/// One step of the stateless cookie exchange on a listening `Ssl`: reads one datagram from
/// its BIO and, for a ClientHello without a valid cookie, writes a HelloVerifyRequest.
pub fn listen(ssl: &SslRef) -> Listen {
    // SAFETY: BIO_ADDR_new takes nothing and returns an owned, zeroed BIO_ADDR or NULL.
    let client = unsafe { BIO_ADDR_new() };
    if client.is_null() {
        return Listen::Failed;
    }
    // SAFETY: `ssl.as_ptr()` is a valid server `SSL*` for the `&SslRef` borrow, used by this
    // thread alone; its read and write BIOs are set (the `SslStream`'s adapter, not borrowed
    // elsewhere during the call). `client` is a valid BIO_ADDR that DTLSv1_listen may clear
    // or fill (our BIO has no peer address, so it clears it) and that it does not keep.
    let r = unsafe { DTLSv1_listen(ssl.as_ptr(), client) };
    // SAFETY: `client` came from BIO_ADDR_new above and is freed once.
    unsafe { BIO_ADDR_free(client) };
    match r {
        1.. => Listen::Verified,
        0 => Listen::NotYet,
        _ => Listen::Failed,
    }
}
