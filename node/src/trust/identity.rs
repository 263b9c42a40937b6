//! The node's persistent overlay identity: an ed25519 key in `<data_dir>/node.key`.
//!
//! The key is created on first start and loaded on every later one, so the node's peer id
//! (and therefore every `--bootstrap .../p2p/<peer id>` that names it) survives restarts.
//! The file holds the libp2p protobuf encoding of the keypair and is readable by its owner
//! only (0600). It is written to a temporary file, synced and renamed into place, so a crash
//! while creating it leaves either no key or a whole one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::{DecodingError, Keypair};

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// The key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading, writing or syncing the key file (or its directory) failed.
    #[error("cannot {action} the {what} {}: {source}", path.display())]
    Io {
        action: &'static str,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold a keypair in libp2p's protobuf encoding.
    #[error("the {what} {} is not a valid libp2p keypair (for the node key: delete it to create a new identity; the peer id will change): {source}", path.display())]
    Decode {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: DecodingError,
    },
    /// The keypair could not be encoded (not expected for ed25519).
    #[error("cannot encode a new key: {0}")]
    Encode(#[source] DecodingError),
}

fn io(action: &'static str, what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.to_path_buf();
    move |source| IdentityError::Io { action, what, path, source }
}

/// Loads the node's keypair from `<data_dir>/node.key`, creating the directory and a new
/// ed25519 key if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    load_or_create_key(&data_dir.join(KEY_FILE), "node key")
}

/// Loads the keypair in `path` (`what` names it in errors and logs), or creates a new
/// ed25519 key there, readable by its owner only.
pub fn load_or_create_key(path: &Path, what: &'static str) -> Result<Keypair, IdentityError> {
    match load_key(path, what)? {
        Some(keypair) => Ok(keypair),
        None => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair.to_protobuf_encoding().map_err(IdentityError::Encode)?;
            write_private(path, &bytes, what)?;
            tracing::debug!(path = %path.display(), peer = %keypair.public().to_peer_id(), "new {what} created");
            Ok(keypair)
        }
    }
}

/// Loads the keypair in `path`; `None` if there is no such file.
pub fn load_key(path: &Path, what: &'static str) -> Result<Option<Keypair>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => {
            let keypair = Keypair::from_protobuf_encoding(&bytes)
                .map_err(|source| IdentityError::Decode { what, path: path.to_path_buf(), source })?;
            if let Ok(meta) = fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the {what} is readable by others; chmod 600 it");
                }
            }
            tracing::debug!(path = %path.display(), peer = %keypair.public().to_peer_id(), "{what} loaded");
            Ok(Some(keypair))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", what, path)(e)),
    }
}

/// Writes `bytes` to `path` readable by its owner only (0600), creating its directory: to a
/// temporary file, synced and renamed into place, so a crash leaves the old file or the new
/// one, whole.
pub fn write_private(path: &Path, bytes: &[u8], what: &'static str) -> Result<(), IdentityError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("create the directory of", what, path))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", what, &tmp)(e)),
        _ => {}
    }
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io("create", what, &tmp))?;
    file.write_all(bytes).map_err(io("write", what, &tmp))?;
    file.sync_all().map_err(io("sync", what, &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("rename into place", what, path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync the directory of", what, path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_id_survives_a_restart() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = load_or_create(dir.path())?;
        let second = load_or_create(dir.path())?;
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        assert!(!dir.path().join("node.key.tmp").exists());
        // A second data directory is a second identity.
        let other = tempfile::tempdir()?;
        assert_ne!(first.public().to_peer_id(), load_or_create(other.path())?.public().to_peer_id());
        Ok(())
    }

    #[test]
    fn the_key_file_is_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join("not").join("yet");
        load_or_create(&nested)?;
        let mode = fs::metadata(nested.join(KEY_FILE))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        Ok(())
    }

    #[test]
    fn a_garbage_key_is_an_error_naming_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, b"this is not a protobuf keypair")?;
        let err = load_or_create(dir.path()).err().ok_or("a garbage key file was accepted")?;
        assert!(matches!(err, IdentityError::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        // The file is left alone: the operator decides.
        assert_eq!(fs::read(&path)?, b"this is not a protobuf keypair");
        Ok(())
    }
}

/// The public key a peer id holds inline (ed25519 and other short keys do: the id is the
/// identity multihash of the key's protobuf encoding); `None` for a hashed id.
pub fn public_key(peer: &libp2p::PeerId) -> Option<libp2p::identity::PublicKey> {
    let hash = libp2p::multihash::Multihash::<64>::from_bytes(&peer.to_bytes()).ok()?;
    (hash.code() == 0).then(|| libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok()).flatten()
}

/// Whether `signature` over `message` is `peer`'s.
pub fn verify(peer: &libp2p::PeerId, message: &[u8], signature: &[u8]) -> bool {
    public_key(peer).is_some_and(|key| key.verify(message, signature))
}
