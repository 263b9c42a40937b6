//! Certificates for the secure listener: the node-local CA, the node's own certificate and
//! device certificates, all EC P-256 keys signed with ECDSA-SHA256 by the `openssl` crate
//! (the same library that serves DTLS: one stack).
//!
//! A device certificate names its client id in its subject's common name, in decimal
//! (`CN=1001`): [`client_id`] is the one place that reads it. `docs/security.md` has the rest.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509NameBuilder, X509Ref, X509};

use crate::trust::identity;

/// The folder of the data dir that holds the built-in CA and the node's certificate.
pub const DIR: &str = "secure";
/// How long the built-in CA and the node's certificate are valid.
pub const AUTHORITY_DAYS: u32 = 3650;
/// A device certificate's validity unless `--days` says otherwise.
pub const DEVICE_DAYS: u32 = 365;

/// Why certificates could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ErrorStack },
    #[error("{path} does not match the key {key}")]
    KeyMismatch { path: PathBuf, key: PathBuf },
    #[error("{0}")]
    Key(#[from] identity::IdentityError),
    #[error("{dir} has no built-in CA key ({file}): the node creates it on its first start, or use a real CA")]
    NoAuthority { dir: PathBuf, file: PathBuf },
    #[error("openssl: {0}")]
    Openssl(#[from] ErrorStack),
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Pair {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Pair").field("subject", self.cert.subject_name()).finish_non_exhaustive()
    }
}

/// What the listener serves with: the CA that signs client certificates, and the node's own.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ca: X509,
    pub node: Pair,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Authority,
    Server,
    Client,
}

/// A new EC P-256 key.
pub fn new_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// Unix seconds now, by the system clock.
pub fn now_secs() -> i64 {
    i64::try_from(crate::shared::now_ns() / 1_000_000_000).unwrap_or(i64::MAX)
}

/// A certificate for `cn` valid from `not_before` to `not_after` (Unix seconds), signed by
/// `issuer` (self-signed when `None`).
pub fn issue(cn: &str, role: Role, issuer: Option<&Pair>, not_before: i64, not_after: i64) -> Result<Pair, ErrorStack> {
    let key = new_key()?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    b.set_serial_number(&*Asn1Integer::from_bn(&serial)?)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))?;
    b.set_pubkey(&key)?;
    b.set_not_before(&*Asn1Time::from_unix(not_before)?)?;
    b.set_not_after(&*Asn1Time::from_unix(not_after)?)?;
    match role {
        Role::Authority => {
            b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
            b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        }
        Role::Server | Role::Client => {
            b.append_extension(BasicConstraints::new().critical().build()?)?;
            b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
            let mut eku = ExtendedKeyUsage::new();
            if role == Role::Server {
                eku.server_auth();
            } else {
                eku.client_auth();
            }
            b.append_extension(eku.build()?)?;
        }
    }
    if role == Role::Server {
        let ctx = b.x509v3_context(issuer.map(|i| &*i.cert), None);
        let san = SubjectAlternativeName::new().dns(cn).dns("localhost").ip("127.0.0.1").ip("::1").build(&ctx)?;
        b.append_extension(san)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())?;
    Ok(Pair { cert: b.build(), key })
}

/// The client id a device certificate names: its subject's common name, a decimal u32.
pub fn client_id(cert: &X509Ref) -> Option<u32> {
    let mut cns = cert.subject_name().entries_by_nid(Nid::COMMONNAME);
    let cn = cns.next()?;
    if cns.next().is_some() {
        return None; // two names: ambiguous
    }
    let text = cn.data().to_string().ok()?;
    let s: &str = &text;
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Io { what: "read", path: path.to_owned(), source })
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    let io = |what| move |source| CertError::Io { what, path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    }
    std::fs::write(path, bytes).map_err(io("write"))
}

fn load_cert(path: &Path) -> Result<X509, CertError> {
    X509::from_pem(&read(path)?).map_err(|source| CertError::Parse { path: path.to_owned(), source })
}

fn load_key(path: &Path) -> Result<PKey<Private>, CertError> {
    PKey::private_key_from_pem(&read(path)?).map_err(|source| CertError::Parse { path: path.to_owned(), source })
}

/// A certificate and its key from PEM files, checked to belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Pair, CertError> {
    let pair = Pair { cert: load_cert(cert)?, key: load_key(key)? };
    if !pair.cert.public_key()?.public_eq(&pair.key) {
        return Err(CertError::KeyMismatch { path: cert.to_owned(), key: key.to_owned() });
    }
    Ok(pair)
}

/// The files of the built-in CA and node certificate in `data_dir`.
#[derive(Debug, Clone)]
pub struct Files {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub node: PathBuf,
    pub node_key: PathBuf,
}

impl Files {
    pub fn in_data_dir(data_dir: &Path) -> Files {
        let d = data_dir.join(DIR);
        Files { ca: d.join("ca.pem"), ca_key: d.join("ca.key"), node: d.join("node.pem"), node_key: d.join("node.key") }
    }
}

/// The built-in CA and the node's certificate in `<data_dir>/secure/`, created on the first
/// start (keys mode 0600). The node's certificate is renewed from the CA when it has expired
/// or its files are gone.
pub fn load_or_create(data_dir: &Path) -> Result<Credentials, CertError> {
    let f = Files::in_data_dir(data_dir);
    let now = now_secs();
    let ca = if f.ca.exists() && f.ca_key.exists() {
        load_pair(&f.ca, &f.ca_key)?
    } else {
        let ca = issue("telemesh node-local CA", Role::Authority, None, now - 3600, now + days(AUTHORITY_DAYS))?;
        identity::write_private(&f.ca_key, &ca.key.private_key_to_pem_pkcs8()?, "secure CA key")?;
        write_public(&f.ca, &ca.cert.to_pem()?)?;
        tracing::info!(path = %f.ca.display(), "created the node-local CA for the secure listener");
        ca
    };
    let existing = if f.node.exists() && f.node_key.exists() { Some(load_pair(&f.node, &f.node_key)?) } else { None };
    let expired = |p: &Pair| Asn1Time::from_unix(now).map_or(true, |t| p.cert.not_after() <= &*t);
    let node = match existing {
        Some(p) if !expired(&p) => p,
        _ => {
            let p = issue("telemesh-node", Role::Server, Some(&ca), now - 3600, now + days(AUTHORITY_DAYS))?;
            identity::write_private(&f.node_key, &p.key.private_key_to_pem_pkcs8()?, "secure node key")?;
            write_public(&f.node, &p.cert.to_pem()?)?;
            p
        }
    };
    Ok(Credentials { ca: ca.cert, node })
}

/// Credentials of a real PKI: the CA that signs devices, the node's certificate and key.
pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Credentials, CertError> {
    Ok(Credentials { ca: load_cert(ca)?, node: load_pair(cert, key)? })
}

fn days(n: u32) -> i64 {
    i64::from(n) * 86_400
}

/// `telemesh certs device`: a certificate for `client` signed by the built-in CA of
/// `data_dir`, written as `out/ca.pem`, `out/device.pem`, `out/device.key` (0600).
pub fn write_device(data_dir: &Path, client: u32, valid_days: u32, out: &Path) -> Result<(), CertError> {
    let f = Files::in_data_dir(data_dir);
    if !f.ca_key.exists() {
        return Err(CertError::NoAuthority { dir: data_dir.to_owned(), file: f.ca_key });
    }
    let ca = load_pair(&f.ca, &f.ca_key)?;
    let now = now_secs();
    // An hour back, so a device whose clock is a little behind accepts it at once.
    let device = issue(&client.to_string(), Role::Client, Some(&ca), now - 3600, now + days(valid_days))?;
    write_public(&out.join("ca.pem"), &ca.cert.to_pem()?)?;
    write_public(&out.join("device.pem"), &device.cert.to_pem()?)?;
    identity::write_private(&out.join("device.key"), &device.key.private_key_to_pem_pkcs8()?, "device key")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_is_the_decimal_common_name() -> Result<(), Box<dyn std::error::Error>> {
        let now = now_secs();
        let ca = issue("ca", Role::Authority, None, now, now + 60)?;
        for (cn, want) in [("1001", Some(1001)), ("0", Some(0)), ("4294967295", Some(u32::MAX)), ("4294967296", None),
            ("01", None), ("", None), ("1001 ", None), ("+5", None), ("dev-1", None)]
        {
            if cn.is_empty() {
                continue; // an empty CN cannot be built
            }
            let p = issue(cn, Role::Client, Some(&ca), now, now + 60)?;
            assert_eq!(client_id(&p.cert), want, "{cn:?}");
        }
        Ok(())
    }

    #[test]
    fn first_start_creates_then_reuses() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let a = load_or_create(dir.path())?;
        let b = load_or_create(dir.path())?;
        assert_eq!(a.ca.to_der()?, b.ca.to_der()?);
        assert_eq!(a.node.cert.to_der()?, b.node.cert.to_der()?);
        let f = Files::in_data_dir(dir.path());
        for key in [&f.ca_key, &f.node_key] {
            assert_eq!(std::fs::metadata(key)?.permissions().mode() & 0o777, 0o600, "{}", key.display());
        }
        assert!(a.node.cert.verify(&*a.ca.public_key()?)?);
        let out = dir.path().join("dev");
        write_device(dir.path(), 1001, 30, &out)?;
        let dev = load_pair(&out.join("device.pem"), &out.join("device.key"))?;
        assert_eq!(client_id(&dev.cert), Some(1001));
        assert!(dev.cert.verify(&*a.ca.public_key()?)?);
        assert_eq!(std::fs::metadata(out.join("device.key"))?.permissions().mode() & 0o777, 0o600);
        // Without a built-in CA there is nothing to sign with.
        let e = write_device(&dir.path().join("nowhere"), 1, 1, &out).expect_err("no CA");
        assert!(matches!(e, CertError::NoAuthority { .. }), "{e}");
        Ok(())
    }
}
