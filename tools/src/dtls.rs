//! A DTLS 1.2 client for the secure dialect (the secure telemetry collection README), with the `openssl` crate: the
//! sensor simulator's and the benchmarks' side of the node's secure listener.
//!
//! One [`Session`] per device and destination, each over its own connected UDP socket (the
//! node tells sessions apart by the peer's address). The client presents a device
//! certificate whose subject CN is the device id in decimal (what `telemesh certs device`
//! writes and the node reads) and verifies the node's certificate against the CA it is
//! given: the chain and the purpose (a device certificate, made for client authentication
//! only, cannot pose as a node); not a host name, since the built-in CA of a node signs only
//! that node's certificate.
//!
//! * **MTU**: set explicitly (`NO_QUERY_MTU` + [`MTU`]); our socket adapter cannot be asked
//!   for one, and without it OpenSSL fragments the handshake wrongly or fails.
//! * **Handshake under loss**: the socket is non-blocking while the handshake runs, and
//!   [`Session::progress`] is called again and again. OpenSSL checks its own retransmission
//!   timer whenever a read finds nothing (`dtls1_read_failed`), and sends its last flight
//!   again once the timer has run out, so many handshakes progress side by side in one
//!   thread. The timer starts at [`FIRST_TIMEOUT`] (250 ms, where OpenSSL's default is 1 s)
//!   and doubles up to [`MAX_TIMEOUT`] (`DTLS_set_timer_cb`, the one call the crate does not
//!   wrap). A handshake not done after [`RESTART_AFTER`] starts again from a new socket: the
//!   node forgets a half-open handshake after 10 s (its `handshake_timeout`), and a
//!   retransmission after that would only be refused (`not_client_hello`).
//! * **After the handshake** the socket blocks (a full send buffer waits rather than drops),
//!   and one [`Session::send`] is one DTLS record, one frame. Nothing is read any more: the
//!   node sends nothing but alerts once the handshake is done.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::ssl::{
    HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslContextBuilder, SslMethod,
    SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509Ref, X509VerifyResult, X509};

/// The largest datagram the client sends (as the node's listener: a 1,200-byte frame and a
/// record header fit in a 1,280-byte path).
pub const MTU: u32 = 1200;

/// How often a waiting handshake looks for the node's answer: short beside a loopback round
/// trip's share of a handshake, so that the measured handshake time is the handshake's.
pub const POLL: Duration = Duration::from_micros(200);
/// The first retransmission timeout of a handshake flight.
pub const FIRST_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest: the timeout doubles after each retransmission up to this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(4);
/// A handshake not done by then starts over (five tries of its flight by then: 0.25, 0.75,
/// 1.75, 3.75 and 7.75 s), before the node's 10 s for a half-open handshake run out.
pub const RESTART_AFTER: Duration = Duration::from_secs(8);

/// Why a DTLS client could not be set up or its handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate, key or CA file is missing or does not parse.
    #[error("{option} {path}: {why}")]
    File { option: &'static str, path: PathBuf, why: String },
    /// The certificate does not name the device it is used for.
    #[error("--cert {path} is for client {named}, not device {device} (its subject CN must be the device id)")]
    WrongDevice { path: PathBuf, named: String, device: u32 },
    /// The node refused the handshake, or the client refused the node.
    #[error("handshake with {to} failed: {why}")]
    Refused { to: SocketAddr, why: String },
    /// No handshake within the time allowed.
    #[error("no DTLS handshake with {to} within {after:?} (is a node's secure listener there? --handshake-timeout)")]
    Timeout { to: SocketAddr, after: Duration },
    /// A socket operation failed.
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    /// OpenSSL failed where no file is to blame.
    #[error("openssl: {0}")]
    Openssl(#[from] ErrorStack),
}

/// What a device authenticates with: its certificate and key, and the CA that signed the
/// node's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Credentials {
    /// These credentials for `device`: `{id}` in the certificate and key paths becomes the
    /// device id (so `certs/{id}/device.pem` names one file per device).
    pub fn for_device(&self, device: u32) -> Credentials {
        let id = device.to_string();
        let fill = |p: &Path| PathBuf::from(p.to_string_lossy().replace("{id}", &id));
        Credentials { ca: fill(&self.ca), cert: fill(&self.cert), key: fill(&self.key) }
    }

    /// Whether the certificate path has an `{id}` placeholder (one certificate per device).
    pub fn per_device(&self) -> bool {
        self.cert.to_string_lossy().contains("{id}") && self.key.to_string_lossy().contains("{id}")
    }
}

/// The client id a certificate names: its subject's one common name, a decimal u32 without
/// leading zeros (the node's rule, `telemesh_node::ingest::dtls::cert::client_id`).
pub fn client_id(cert: &X509Ref) -> Option<u32> {
    let mut cns = cert.subject_name().entries_by_nid(Nid::COMMONNAME);
    let cn = cns.next()?;
    if cns.next().is_some() {
        return None;
    }
    let text = cn.data().to_string().ok()?;
    let s: &str = &text;
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// The subject CN of a certificate, for messages.
fn common_name(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .map_or_else(|| "(no CN)".to_owned(), |s| s.to_string())
}

fn file_error(option: &'static str, path: &Path, why: impl fmt::Display) -> Error {
    Error::File { option, path: path.to_owned(), why: why.to_string() }
}

/// The first reason in an OpenSSL error stack, without the codes around it.
fn reasons(stack: &ErrorStack) -> String {
    let v: Vec<String> = stack.errors().iter().filter_map(|e| e.reason().map(str::to_owned)).collect();
    if v.is_empty() {
        stack.to_string()
    } else {
        v.join("; ")
    }
}

/// A device's client context: DTLS 1.2 only, its certificate and key, the node verified
/// against the CA.
#[derive(Clone)]
pub struct Context {
    context: SslContext,
    /// The client id the certificate names.
    pub client: u32,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("client", &self.client).finish_non_exhaustive()
    }
}

/// The environment variable that names a key log file, as curl and browsers read it.
pub const KEYLOG_ENV: &str = "SSLKEYLOGFILE";

/// Appends each session's secrets to `path` in the NSS key log format, so that Wireshark
/// can decrypt a capture of the sessions (`-o tls.keylog_file:PATH`, docs/wireshark.md).
/// Only when [`KEYLOG_ENV`] names a file: whoever reads it reads the sessions. Created with
/// mode 0600.
fn keylog(b: &mut SslContextBuilder, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| Error::Io { what: format!("{KEYLOG_ENV} {}", path.display()), err })?;
    let file = std::sync::Mutex::new(file);
    b.set_keylog_callback(move |_, line| {
        if let Ok(mut f) = file.lock() {
            // A line lost to a full disk costs the decryption of one session, nothing else.
            let _ = writeln!(f, "{line}");
        }
    });
    Ok(())
}

impl Context {
    /// Reads the files, checks the key belongs to the certificate and the certificate names
    /// `device` (when given).
    pub fn new(credentials: &Credentials, device: Option<u32>) -> Result<Context, Error> {
        let Credentials { ca, cert, key } = credentials;
        let read = |option, path: &Path| std::fs::read(path).map_err(|e| file_error(option, path, e));
        let ca_pem = read("--ca", ca)?;
        let cas = X509::stack_from_pem(&ca_pem)
            .map_err(|e| file_error("--ca", ca, format!("not PEM certificates ({})", reasons(&e))))?;
        if cas.is_empty() {
            return Err(file_error("--ca", ca, "no certificate in it (expected PEM)"));
        }
        let cert_pem = read("--cert", cert)?;
        let x509 = X509::from_pem(&cert_pem)
            .map_err(|e| file_error("--cert", cert, format!("not a PEM certificate ({})", reasons(&e))))?;
        let client = client_id(&x509).ok_or_else(|| {
            let cn = common_name(&x509);
            file_error("--cert", cert, format!("its subject CN {cn:?} is not a client id (a decimal number)"))
        })?;
        if let Some(device) = device.filter(|d| *d != client) {
            return Err(Error::WrongDevice { path: cert.clone(), named: client.to_string(), device });
        }
        let key_pem = read("--key", key)?;
        let pkey = openssl::pkey::PKey::private_key_from_pem(&key_pem)
            .map_err(|e| file_error("--key", key, format!("not a PEM private key ({})", reasons(&e))))?;
        if !x509.public_key()?.public_eq(&pkey) {
            return Err(file_error("--key", key, format!("not the key of {}", cert.display())));
        }
        let mut b = SslContextBuilder::new(SslMethod::dtls())?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
        for c in cas {
            b.cert_store_mut().add_cert(c)?;
        }
        b.set_certificate(&x509)?;
        b.set_private_key(&pkey)?;
        b.check_private_key()?;
        b.set_verify(SslVerifyMode::PEER);
        b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET | SslOptions::NO_RENEGOTIATION);
        if let Some(path) = std::env::var_os(KEYLOG_ENV).filter(|p| !p.is_empty()) {
            keylog(&mut b, Path::new(&path))?;
        }
        Ok(Context { context: b.build(), client })
    }
}

/// A connected UDP socket as OpenSSL's datagram transport: one `read` is one datagram, one
/// `write` one datagram.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    /// Datagrams the kernel refused to send (`ECONNREFUSED` after an ICMP port unreachable:
    /// nothing listens there, yet); each is a datagram lost, as on a radio.
    refused: u64,
}

impl Read for Udp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.socket.recv(buf) {
            // Nothing listens at the node's address (yet): as if nothing had arrived.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Err(ErrorKind::WouldBlock.into()),
            other => other,
        }
    }
}

impl Write for Udp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.socket.send(buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                self.refused += 1;
                Ok(buf.len())
            }
            other => other,
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    Handshake(MidHandshakeSslStream<Udp>),
    Up(SslStream<Udp>),
    /// Between states (never seen outside a method), or failed for good.
    Gone,
}

/// One DTLS session of one device with one node.
pub struct Session {
    state: State,
    to: SocketAddr,
    context: Context,
    started: Instant,
    /// When the handshake now under way started (a restart's, or `started`).
    attempt: Instant,
    /// Handshakes started again after [`RESTART_AFTER`].
    restarts: u32,
    /// How long the handshake took, once done.
    handshake: Option<Duration>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Handshake(_) => "handshake",
            State::Up(_) => "up",
            State::Gone => "gone",
        };
        f.debug_struct("Session").field("to", &self.to).field("state", &state).finish_non_exhaustive()
    }
}

impl Session {
    /// Binds a socket, connects it to `to` and sends the ClientHello; [`Session::progress`]
    /// does the rest.
    pub fn start(context: &Context, to: SocketAddr) -> Result<Session, Error> {
        let now = Instant::now();
        let state = Session::hello(context, to)?;
        let mut session = Session {
            state,
            to,
            context: context.clone(),
            started: now,
            attempt: now,
            restarts: 0,
            handshake: None,
        };
        session.established();
        Ok(session)
    }

    /// A new socket and `Ssl`, and the first ClientHello.
    fn hello(context: &Context, to: SocketAddr) -> Result<State, Error> {
        let io = |what: &str| {
            let what = format!("{what} (DTLS to {to})");
            move |err| Error::Io { what, err }
        };
        let local = if to.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], 0)) } else { SocketAddr::from(([0u16; 8], 0)) };
        let socket = UdpSocket::bind(local).map_err(io("bind a UDP socket"))?;
        socket.connect(to).map_err(io("connect the UDP socket"))?;
        socket.set_nonblocking(true).map_err(io("make the socket non-blocking"))?;
        let mut ssl = Ssl::new(&context.context)?;
        ssl.set_connect_state();
        ssl.set_mtu(MTU)?;
        timer::install(&ssl);
        Ok(match ssl.connect(Udp { socket, refused: 0 }) {
            Ok(stream) => State::Up(stream),
            Err(HandshakeError::WouldBlock(mid)) => State::Handshake(mid),
            Err(HandshakeError::SetupFailure(e)) => return Err(Error::Openssl(e)),
            Err(HandshakeError::Failure(mid)) => return Err(refusal(to, &mid)),
        })
    }

    /// Handshakes started again so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Where the session goes.
    pub fn to(&self) -> SocketAddr {
        self.to
    }

    /// Moves the handshake on with whatever has arrived (and retransmits if OpenSSL's timer
    /// says so). `Ok(true)`: the session is up.
    pub fn progress(&mut self) -> Result<bool, Error> {
        if matches!(self.state, State::Handshake(_)) && self.attempt.elapsed() >= RESTART_AFTER {
            self.state = Session::hello(&self.context, self.to)?;
            self.attempt = Instant::now();
            self.restarts += 1;
        }
        match std::mem::replace(&mut self.state, State::Gone) {
            State::Handshake(mid) => match mid.handshake() {
                Ok(stream) => self.state = State::Up(stream),
                Err(HandshakeError::WouldBlock(mid)) => self.state = State::Handshake(mid),
                Err(HandshakeError::SetupFailure(e)) => return Err(Error::Openssl(e)),
                Err(HandshakeError::Failure(mid)) => return Err(refusal(self.to, &mid)),
            },
            other => self.state = other,
        }
        self.established();
        Ok(self.is_up())
    }

    /// On the step that finished the handshake: note its time, make the socket block.
    fn established(&mut self) {
        if let (State::Up(stream), None) = (&self.state, self.handshake) {
            self.handshake = Some(self.started.elapsed());
            if let Err(e) = stream.get_ref().socket.set_nonblocking(false) {
                tracing::warn!(to = %self.to, error = %e, "cannot make the DTLS socket blocking");
            }
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// How long the handshake took (from the first ClientHello to the node's Finished).
    pub fn handshake_time(&self) -> Option<Duration> {
        self.handshake
    }

    /// Sends one frame as one DTLS record. An error when the session is not up, or the
    /// record could not be written (the session is kept: a datagram the kernel refused is
    /// one lost frame; if OpenSSL took the error as fatal, the next sends fail as well).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let State::Up(stream) = &mut self.state else {
            return Err(io::Error::new(ErrorKind::NotConnected, "the DTLS handshake has not finished"));
        };
        let refused = stream.get_ref().refused;
        match stream.ssl_write(frame) {
            Ok(n) if n == frame.len() => {}
            Ok(n) => return Err(io::Error::other(format!("wrote {n} of {} bytes", frame.len()))),
            Err(e) => {
                return Err(match e.into_io_error() {
                    Ok(io) => io,
                    Err(e) => io::Error::other(e.to_string()),
                })
            }
        }
        if stream.get_ref().refused > refused {
            return Err(io::Error::new(ErrorKind::ConnectionRefused, "connection refused (nothing listens there)"));
        }
        Ok(())
    }

    /// Sends close_notify (once up; a handshake in progress is just dropped).
    pub fn close(&mut self) {
        if let State::Up(stream) = &mut self.state {
            let _ = stream.shutdown();
        }
        self.state = State::Gone;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// The retransmission timer of a client's handshake: [`FIRST_TIMEOUT`], doubling up to
/// [`MAX_TIMEOUT`].
mod timer {
    #![allow(unsafe_code)]

    use std::os::raw::c_uint;

    use foreign_types::ForeignTypeRef;
    use openssl::ssl::SslRef;
    use openssl_sys::SSL;

    extern "C" {
        // In libssl since 1.1.1 (`ssl.h`): `void DTLS_set_timer_cb(SSL *s, DTLS_timer_cb cb)`.
        fn DTLS_set_timer_cb(s: *mut SSL, cb: Option<extern "C" fn(*mut SSL, c_uint) -> c_uint>);
    }

    /// The next timeout in µs: OpenSSL passes 0 for the first, else the one that ran out.
    extern "C" fn next(_: *mut SSL, timer_us: c_uint) -> c_uint {
        let first = super::FIRST_TIMEOUT.as_micros() as c_uint;
        let max = super::MAX_TIMEOUT.as_micros() as c_uint;
        if timer_us == 0 {
            first
        } else {
            timer_us.saturating_mul(2).min(max)
        }
    }

    pub fn install(ssl: &SslRef) {
        // SAFETY: `ssl.as_ptr()` is a valid `SSL*` for the borrow, used by this thread alone;
        // OpenSSL keeps only the function pointer, a plain function with the C signature of
        // `DTLS_timer_cb` that touches nothing but its arguments and is never unloaded.
        unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(next)) }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_timeout_starts_at_250_ms_and_doubles_to_4_s() {
            let mut t = 0;
            let mut seen = Vec::new();
            for _ in 0..7 {
                t = super::next(std::ptr::null_mut(), t);
                seen.push(t / 1000);
            }
            assert_eq!(seen, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        }
    }
}

/// Why a handshake failed, in words: the client's own verdict on the node's certificate if
/// it had one, else the node's alert.
fn refusal(to: SocketAddr, mid: &MidHandshakeSslStream<Udp>) -> Error {
    let verify = mid.ssl().verify_result();
    let why = if verify != X509VerifyResult::OK {
        format!("the node's certificate does not verify against --ca: {}", verify.error_string())
    } else {
        let detail = match mid.error().ssl_error() {
            Some(stack) => reasons(stack),
            None => match mid.error().io_error() {
                Some(e) => e.to_string(),
                None => format!("{:?}", mid.error().code()),
            },
        };
        let hint = if detail.contains("unknown ca") {
            " (the node does not trust the CA that signed --cert)"
        } else if detail.contains("certificate expired") {
            " (--cert has expired)"
        } else if detail.contains("bad certificate") || detail.contains("certificate unknown") {
            " (the node refused --cert)"
        } else {
            ""
        };
        format!("{detail}{hint}")
    };
    Error::Refused { to, why }
}

/// Drives every session's handshake until all are up or `timeout` has passed since the
/// first started. A refusal ends it at once. `Ok(pending)`: how many are still not up
/// (each keeps its handshake going if [`Session::progress`] is called later).
pub fn handshake_all(sessions: &mut [Session], timeout: Duration) -> Result<usize, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pending = 0;
        for s in sessions.iter_mut() {
            if !s.progress()? {
                pending += 1;
            }
        }
        if pending == 0 || Instant::now() >= deadline {
            return Ok(pending);
        }
        std::thread::sleep(POLL);
    }
}
