//! The secure listener: the secure telemetry collection README's frames over DTLS 1.2 with mutual certificate
//! authentication, many clients on one UDP socket.
//!
//! One thread owns the socket and a table of sessions keyed by the peer's address. Each
//! session is an OpenSSL `Ssl` (server side) over a [`Pipe`]: a `Read + Write` of queued
//! datagrams, so the listener, not OpenSSL, does all socket I/O. The MTU is set explicitly
//! (`NO_QUERY_MTU`); handshake retransmission is driven from the loop's tick
//! ([`ffi::handle_timeout`]). Every DTLS record a client sends after its handshake is one
//! frame, handed to the same [`Listener`] path as the plain dialects, after a check that the
//! frame's client id is the one its certificate names ([`cert::client_id`]).
//!
//! Bounds: a new peer gets no state until it proves it receives at its address: one shared
//! listening `Ssl` answers every ClientHello without a valid cookie with a
//! HelloVerifyRequest (`DTLSv1_listen`, [`ffi::listen`]: stateless, the cookie a keyed hash
//! of the address), and only a ClientHello with a valid cookie becomes a session. Then: at
//! most `max_half_open` handshakes in progress, each expired after `handshake_timeout`; at
//! most `max_sessions` sessions in all, each expired after `idle` without a record. Every
//! refusal is counted by [`Refusal`] in `telemesh_secure_refused_total{reason}`.

pub mod cert;
mod ffi;

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslSessionCacheMode, SslStream,
    SslVerifyMode, SslVersion,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use telemesh_proto::wire::Dialect;
use tokio_util::sync::CancellationToken;

use super::Listener;
use crate::shared::{now_ns, Shared};

pub use cert::Credentials;

/// Drop reason (`telemesh_drops{dialect="secure"}`) of a frame whose client id is not the
/// one its sender's certificate names.
pub const CLIENT_MISMATCH: &str = "client_mismatch";

/// The largest datagram the node sends (handshake flights are fragmented to fit); also what
/// a secure frame of at most 1,200 bytes plus a record header fits in on a 1,280-byte path.
pub const MTU: u32 = 1200;
/// How often a blocked `recv` wakes up to tick timers and check for shutdown.
const POLL: Duration = Duration::from_millis(20);
/// Timers (retransmission, expiry) are looked at this often.
const TICK: Duration = Duration::from_millis(100);
/// Datagrams queued for one session before the listener drives it (it drives at once, so
/// more than one means a bug; the bound is there regardless).
const MAX_QUEUED: usize = 8;

/// The listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Handshakes in progress at once; more new peers are refused until some finish.
    pub max_half_open: usize,
    /// Sessions at once, handshaking or established.
    pub max_sessions: usize,
    /// A handshake not finished this long after the peer's first datagram is dropped.
    pub handshake_timeout: Duration,
    /// An established session that sent nothing this long is dropped.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_half_open: 1024,
            max_sessions: 4096,
            handshake_timeout: Duration::from_secs(30),
            idle: Duration::from_secs(300),
        }
    }
}

/// Why a peer was refused or a session ended before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The client's certificate has expired.
    Expired,
    /// The client's certificate is not valid yet.
    NotYetValid,
    /// The client's certificate is not signed by the CA the node trusts.
    UnknownCa,
    /// The client sent no certificate.
    MissingCertificate,
    /// Any other certificate problem (bad signature, wrong purpose, …).
    BadCertificate,
    /// The certificate verified, but its subject CN is not a client id.
    NoClientId,
    /// The handshake failed otherwise (no shared cipher, bad message, a wrong cookie).
    HandshakeFailed,
    /// The handshake did not finish in time (or its retransmissions ran out).
    HandshakeTimeout,
    /// A new peer while `max_half_open` handshakes are in progress.
    HalfOpenFull,
    /// A new peer while `max_sessions` sessions exist.
    SessionsFull,
    /// A datagram from an unknown peer that is not a DTLS ClientHello.
    NotClientHello,
    /// A ClientHello the cookie exchange could not parse (a wrong cookie is answered with a
    /// new HelloVerifyRequest, as RFC 6347 says, and costs nothing).
    BadClientHello,
}

impl Refusal {
    pub const ALL: [Refusal; 12] = [
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::UnknownCa,
        Refusal::MissingCertificate,
        Refusal::BadCertificate,
        Refusal::NoClientId,
        Refusal::HandshakeFailed,
        Refusal::HandshakeTimeout,
        Refusal::HalfOpenFull,
        Refusal::SessionsFull,
        Refusal::NotClientHello,
        Refusal::BadClientHello,
    ];

    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::MissingCertificate => "missing_certificate",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::NoClientId => "no_client_id",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::HalfOpenFull => "half_open_full",
            Refusal::SessionsFull => "sessions_full",
            Refusal::NotClientHello => "not_client_hello",
            Refusal::BadClientHello => "bad_client_hello",
        }
    }

    /// Why a handshake failed, from what OpenSSL recorded: the certificate verification
    /// result if there was one, else whether the peer sent a certificate at all.
    fn of_failed_handshake(ssl: &SslRef, error: &openssl::ssl::Error) -> Refusal {
        use openssl_sys as ffi;
        let v = ssl.verify_result().as_raw();
        match v {
            ffi::X509_V_OK => {}
            ffi::X509_V_ERR_CERT_HAS_EXPIRED => return Refusal::Expired,
            ffi::X509_V_ERR_CERT_NOT_YET_VALID => return Refusal::NotYetValid,
            ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
            | ffi::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
            | ffi::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            | ffi::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN => return Refusal::UnknownCa,
            _ => return Refusal::BadCertificate,
        }
        // SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE in OpenSSL's sslerr.h.
        const PEER_DID_NOT_RETURN_A_CERTIFICATE: std::os::raw::c_int = 199;
        let no_cert = error
            .ssl_error()
            .is_some_and(|stack| stack.errors().iter().any(|e| e.reason_code() == PEER_DID_NOT_RETURN_A_CERTIFICATE));
        if no_cert {
            Refusal::MissingCertificate
        } else {
            Refusal::HandshakeFailed
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The secure listener's metrics (`telemesh_secure_*`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    refused: Family<ReasonLabel, Counter>,
    closed: Family<ReasonLabel, Counter>,
    /// Handshakes completed with a verified client certificate naming a client id.
    pub handshakes: Counter,
    /// Handshake flights sent again after their timer expired.
    pub retransmissions: Counter,
    /// HelloVerifyRequests sent (a new peer's ClientHello without a valid cookie).
    pub hello_verify: Counter,
    /// Sessions held (handshaking or established).
    pub sessions: Gauge,
    /// Handshakes in progress.
    pub half_open: Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("secure");
        r.register("refused", "Secure (DTLS) peers refused or dropped mid-handshake, by reason", self.refused.clone());
        r.register("closed", "Secure sessions ended: close_notify, idle, error, replaced", self.closed.clone());
        let handshakes = self.handshakes.clone();
        r.register("handshakes", "Secure handshakes completed with a verified client certificate", handshakes);
        r.register("retransmissions", "Secure handshake flights retransmitted", self.retransmissions.clone());
        let hello_verify = self.hello_verify.clone();
        r.register("hello_verify", "HelloVerifyRequests sent, statelessly, to new secure peers", hello_verify);
        r.register("sessions", "Secure sessions held (handshaking or established)", self.sessions.clone());
        r.register("half_open", "Secure handshakes in progress", self.half_open.clone());
        for reason in Refusal::ALL {
            let _ = self.refused.get_or_create(&ReasonLabel { reason: reason.reason() });
        }
        for reason in ["close_notify", "idle", "error", "replaced"] {
            let _ = self.closed.get_or_create(&ReasonLabel { reason });
        }
    }

    pub fn count(&self, refusal: Refusal) {
        self.refused.get_or_create(&ReasonLabel { reason: refusal.reason() }).inc();
    }

    /// Refusals counted so far for `refusal`.
    pub fn refused(&self, refusal: Refusal) -> u64 {
        self.refused.get_or_create(&ReasonLabel { reason: refusal.reason() }).get()
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// Why the DTLS context could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("cannot set up DTLS: {0}")]
    Openssl(#[from] ErrorStack),
}

/// The DTLS server context: DTLS 1.2 only, the node's certificate, client certificates
/// required and verified against `credentials.ca` alone, cookie exchange on.
/// `peer` is the address of the datagram being handled (the cookie is computed over it).
pub fn context(credentials: &Credentials, peer: Arc<Mutex<Option<SocketAddr>>>) -> Result<SslContext, SetupError> {
    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_certificate(&credentials.node.cert)?;
    b.set_private_key(&credentials.node.key)?;
    b.check_private_key()?;
    b.cert_store_mut().add_cert(credentials.ca.clone())?;
    b.add_client_ca(&credentials.ca)?;
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_options(
        SslOptions::NO_QUERY_MTU | SslOptions::COOKIE_EXCHANGE | SslOptions::NO_RENEGOTIATION | SslOptions::NO_TICKET,
    );
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    // The cookie: a keyed hash of the peer's address under a secret made at start. It
    // proves the peer receives at that address before the node does any public-key work.
    let secret: [u8; 32] = rand::random();
    let cookie = move |_: &SslRef| {
        let peer = peer.lock().unwrap_or_else(PoisonError::into_inner).map(|a| a.to_string()).unwrap_or_default();
        *blake3::keyed_hash(&secret, peer.as_bytes()).as_bytes()
    };
    let generate = cookie.clone();
    b.set_cookie_generate_cb(move |ssl, out| {
        let c = generate(ssl);
        let n = c.len().min(out.len());
        out[..n].copy_from_slice(&c[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(move |ssl, got| {
        let c = cookie(ssl);
        got.len() <= c.len() && !got.is_empty() && openssl::memcmp::eq(got, &c[..got.len()])
    });
    Ok(b.build())
}

/// A session's datagrams: what the listener received for OpenSSL to read, and what OpenSSL
/// wrote for the listener to send. One `read` is one datagram, one `write` one datagram.
#[derive(Debug, Default)]
struct Pipe {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbox.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outbox.len() < 64 {
            self.outbox.push(buf.to_vec());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake { since: Instant },
    /// Past the handshake: the client id the certificate names.
    Established { client: u32 },
}

struct Session {
    stream: SslStream<Pipe>,
    phase: Phase,
    last: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("phase", &self.phase).field("last", &self.last).finish_non_exhaustive()
    }
}

/// Whether `d` is a DTLS handshake record holding the start of a ClientHello (content type
/// 22, version 0xfe.., handshake type 1): the only datagram that earns a new peer any state.
fn is_client_hello(d: &[u8]) -> bool {
    d.len() >= 25 && d[0] == 22 && d[1] == 0xfe && d[13] == 1
}

/// The secure listener of one UDP socket.
pub struct Secure {
    context: SslContext,
    /// The peer whose datagram is being handled, for the cookie callbacks.
    peer: Arc<Mutex<Option<SocketAddr>>>,
    /// The one `Ssl` that answers new peers until one shows a valid cookie.
    listening: SslStream<Pipe>,
    limits: Limits,
    sessions: HashMap<SocketAddr, Session>,
    half_open: usize,
    ingest: Listener,
    metrics: Metrics,
}

impl std::fmt::Debug for Secure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secure")
            .field("limits", &self.limits)
            .field("sessions", &self.sessions.len())
            .field("half_open", &self.half_open)
            .finish_non_exhaustive()
    }
}

impl Secure {
    pub fn new(credentials: &Credentials, limits: Limits, shared: Arc<Shared>) -> Result<Secure, SetupError> {
        let peer = Arc::new(Mutex::new(None));
        let context = context(credentials, Arc::clone(&peer))?;
        let listening = new_session(&context)?;
        let metrics = shared.metrics.secure.clone();
        Ok(Secure {
            context,
            peer,
            listening,
            limits,
            sessions: HashMap::new(),
            half_open: 0,
            ingest: Listener::new(Dialect::Secure, shared),
            metrics,
        })
    }

    /// Receives until `shutdown`.
    pub fn run(mut self, socket: UdpSocket, shutdown: CancellationToken) {
        if let Err(e) = socket.set_read_timeout(Some(POLL)) {
            tracing::warn!(error = %e, "cannot set the secure socket's timeout");
        }
        // The largest UDP payload: a record bigger than a frame is still read whole (and
        // dropped as too long) rather than misread as two.
        let mut buf = vec![0u8; 65_536];
        let mut plain = vec![0u8; 65_536];
        let mut last_tick = Instant::now();
        while !shutdown.is_cancelled() {
            match socket.recv_from(&mut buf) {
                Ok((n, peer)) => self.datagram(&socket, peer, &buf[..n], &mut plain, Instant::now()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => {
                    // ICMP port unreachable from a vanished client lands here on Linux.
                    tracing::debug!(error = %e, "secure recv failed");
                }
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= TICK {
                last_tick = now;
                self.tick(&socket, now);
            }
        }
        self.metrics.sessions.set(0);
        self.metrics.half_open.set(0);
    }

    /// One datagram from `peer`.
    fn datagram(&mut self, socket: &UdpSocket, peer: SocketAddr, d: &[u8], plain: &mut [u8], now: Instant) {
        *self.peer.lock().unwrap_or_else(PoisonError::into_inner) = Some(peer);
        // A new ClientHello (epoch 0) from an established peer: the device restarted on the
        // same address. It goes through the cookie exchange like any new peer, and replaces
        // the old session only once its cookie proves the address.
        let restarted = is_client_hello(d)
            && d[3..5] == [0, 0]
            && self.sessions.get(&peer).is_some_and(|s| matches!(s.phase, Phase::Established { .. }));
        if restarted || !self.sessions.contains_key(&peer) {
            match self.admit(socket, peer, d, now) {
                // A new session, holding the ClientHello: drive it.
                Ok(true) => {}
                // A HelloVerifyRequest went out; nothing is kept.
                Ok(false) => return,
                Err(refusal) => {
                    self.metrics.count(refusal);
                    return;
                }
            }
        } else if let Some(session) = self.sessions.get_mut(&peer) {
            let inbox = &mut session.stream.get_mut().inbox;
            if inbox.len() < MAX_QUEUED {
                inbox.push_back(d.to_vec());
            }
        }
        let Some(session) = self.sessions.get_mut(&peer) else { return };
        let was_handshake = matches!(session.phase, Phase::Handshake { .. });
        let end = drive(session, &mut self.ingest, &self.metrics, plain, now);
        send(socket, peer, session);
        if was_handshake && !matches!(session.phase, Phase::Handshake { .. }) {
            self.half_open -= 1;
        }
        if let Some(end) = end {
            self.remove(peer, end);
        }
        self.gauges();
    }

    /// A datagram from a new peer, through the stateless cookie exchange. `Ok(true)`: it
    /// was a ClientHello with a valid cookie and is now a session; `Ok(false)`: a
    /// HelloVerifyRequest was sent and nothing kept.
    fn admit(&mut self, socket: &UdpSocket, peer: SocketAddr, d: &[u8], now: Instant) -> Result<bool, Refusal> {
        if !is_client_hello(d) {
            return Err(Refusal::NotClientHello);
        }
        let pipe = self.listening.get_mut();
        pipe.inbox.clear();
        pipe.inbox.push_back(d.to_vec());
        let outcome = ffi::listen(self.listening.ssl());
        let pipe = self.listening.get_mut();
        pipe.inbox.clear();
        let answer = std::mem::take(&mut pipe.outbox);
        for a in &answer {
            if let Err(e) = socket.send_to(a, peer) {
                tracing::debug!(%peer, error = %e, "secure send failed");
            }
        }
        match outcome {
            ffi::Listen::NotYet if answer.is_empty() => Err(Refusal::BadClientHello),
            ffi::Listen::NotYet => {
                self.metrics.hello_verify.inc();
                Ok(false)
            }
            ffi::Listen::Failed => {
                self.renew_listening();
                Err(Refusal::HandshakeFailed)
            }
            // No room: the listening `Ssl` starts over with the next datagram (`SSL_clear`).
            ffi::Listen::Verified if self.sessions.contains_key(&peer) => {
                // Replacing an established session (see `datagram`): there is room.
                let fresh = new_session(&self.context).map_err(|_| Refusal::HandshakeFailed)?;
                let stream = std::mem::replace(&mut self.listening, fresh);
                self.sessions.insert(peer, Session { stream, phase: Phase::Handshake { since: now }, last: now });
                self.half_open += 1;
                self.metrics.closed("replaced");
                Ok(true)
            }
            ffi::Listen::Verified if self.half_open >= self.limits.max_half_open => Err(Refusal::HalfOpenFull),
            ffi::Listen::Verified if self.sessions.len() >= self.limits.max_sessions => Err(Refusal::SessionsFull),
            ffi::Listen::Verified => {
                let Ok(fresh) = new_session(&self.context) else {
                    self.renew_listening();
                    return Err(Refusal::HandshakeFailed);
                };
                let stream = std::mem::replace(&mut self.listening, fresh);
                self.sessions.insert(peer, Session { stream, phase: Phase::Handshake { since: now }, last: now });
                self.half_open += 1;
                Ok(true)
            }
        }
    }

    fn renew_listening(&mut self) {
        match new_session(&self.context) {
            Ok(s) => self.listening = s,
            Err(e) => tracing::warn!(error = %e, "cannot renew the listening DTLS session"),
        }
    }

    /// Retransmits handshake flights whose timer expired; drops handshakes past their
    /// deadline and sessions idle past theirs.
    fn tick(&mut self, socket: &UdpSocket, now: Instant) {
        let mut ended = Vec::new();
        for (peer, session) in &mut self.sessions {
            match session.phase {
                Phase::Handshake { since } => {
                    if now.duration_since(since) >= self.limits.handshake_timeout {
                        ended.push((*peer, End::Refused(Refusal::HandshakeTimeout)));
                        continue;
                    }
                    match ffi::handle_timeout(session.stream.ssl()) {
                        Some(true) => {
                            self.metrics.retransmissions.inc();
                            send(socket, *peer, session);
                        }
                        Some(false) => {}
                        None => ended.push((*peer, End::Refused(Refusal::HandshakeTimeout))),
                    }
                }
                Phase::Established { .. } => {
                    if now.duration_since(session.last) >= self.limits.idle {
                        ended.push((*peer, End::Closed("idle")));
                    }
                }
            }
        }
        for (peer, end) in ended {
            self.remove(peer, end);
        }
        self.gauges();
    }

    fn remove(&mut self, peer: SocketAddr, end: End) {
        let Some(session) = self.sessions.remove(&peer) else { return };
        if matches!(session.phase, Phase::Handshake { .. }) {
            self.half_open -= 1;
        }
        match end {
            End::Refused(r) => {
                tracing::debug!(%peer, reason = r.reason(), "secure peer refused");
                self.metrics.count(r);
            }
            End::Closed(reason) => {
                tracing::debug!(%peer, reason, "secure session closed");
                self.metrics.closed(reason);
            }
        }
    }

    fn gauges(&self) {
        self.metrics.sessions.set(i64::try_from(self.sessions.len()).unwrap_or(i64::MAX));
        self.metrics.half_open.set(i64::try_from(self.half_open).unwrap_or(i64::MAX));
    }
}

/// A server-side `Ssl` over an empty [`Pipe`], MTU set.
fn new_session(context: &SslContext) -> Result<SslStream<Pipe>, ErrorStack> {
    let mut ssl = Ssl::new(context)?;
    ssl.set_accept_state();
    ssl.set_mtu(MTU)?;
    SslStream::new(ssl, Pipe::default())
}

/// How a session ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Refused(Refusal),
    Closed(&'static str),
}

/// Sends what OpenSSL wrote for `peer`.
fn send(socket: &UdpSocket, peer: SocketAddr, session: &mut Session) {
    for d in session.stream.get_mut().outbox.drain(..) {
        if let Err(e) = socket.send_to(&d, peer) {
            tracing::debug!(%peer, error = %e, "secure send failed");
        }
    }
}

/// Moves a session on with what is in its inbox: the handshake, then every record, each
/// one frame. `Some(end)`: the session is over.
fn drive(
    session: &mut Session,
    ingest: &mut Listener,
    metrics: &Metrics,
    plain: &mut [u8],
    now: Instant,
) -> Option<End> {
    if let Phase::Handshake { .. } = session.phase {
        match session.stream.do_handshake() {
            Ok(()) => {
                let client = session.stream.ssl().peer_certificate().and_then(|c| cert::client_id(&c));
                let Some(client) = client else { return Some(End::Refused(Refusal::NoClientId)) };
                metrics.handshakes.inc();
                tracing::debug!(client, "secure session established");
                session.phase = Phase::Established { client };
                session.last = now;
            }
            Err(e) if is_retry(e.code()) => return None,
            Err(e) => return Some(End::Refused(Refusal::of_failed_handshake(session.stream.ssl(), &e))),
        }
    }
    let Phase::Established { client } = session.phase else { return None };
    loop {
        match session.stream.ssl_read(plain) {
            Ok(n) => {
                session.last = now;
                ingest.handle_authenticated(&plain[..n], now_ns(), |record| {
                    if record.stream.device == client {
                        Ok(())
                    } else {
                        Err(CLIENT_MISMATCH)
                    }
                });
            }
            Err(e) if is_retry(e.code()) => return None,
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                // The client said close_notify: answer it, then forget the session.
                let _ = session.stream.shutdown();
                return Some(End::Closed("close_notify"));
            }
            Err(e) => {
                tracing::debug!(client, error = %e, "secure session failed");
                return Some(End::Closed("error"));
            }
        }
    }
}

fn is_retry(code: ErrorCode) -> bool {
    code == ErrorCode::WANT_READ || code == ErrorCode::WANT_WRITE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_client_hello_earns_state() {
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 1];
        hello.resize(40, 0);
        assert!(is_client_hello(&hello));
        let mut app = hello.clone();
        app[0] = 23;
        assert!(!is_client_hello(&app));
        let mut server_hello = hello.clone();
        server_hello[13] = 2;
        assert!(!is_client_hello(&server_hello));
        assert!(!is_client_hello(&hello[..24]));
        assert!(!is_client_hello(&[]));
    }

    #[test]
    fn every_refusal_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.reason()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
