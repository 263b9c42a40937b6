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
    #[error("cannot {action} the node key {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold a keypair in libp2p's protobuf encoding.
    #[error("the node key {} is not a valid libp2p keypair (delete it to create a new identity; the peer id will change): {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: DecodingError,
    },
    /// The keypair could not be encoded (not expected for ed25519).
    #[error("cannot encode the new node key: {0}")]
    Encode(#[source] DecodingError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.to_path_buf();
    move |source| IdentityError::Io { action, path, source }
}

/// Loads the node's keypair from `<data_dir>/node.key`, creating the directory and a new
/// ed25519 key (mode 0600) if there is none yet.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let keypair = Keypair::from_protobuf_encoding(&bytes)
                .map_err(|source| IdentityError::Decode { path: path.clone(), source })?;
            if let Ok(meta) = fs::metadata(&path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the node key is readable by others; chmod 600 it");
                }
            }
            tracing::debug!(path = %path.display(), peer = %keypair.public().to_peer_id(), "node key loaded");
            Ok(keypair)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(io("create the directory of", &path))?;
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair.to_protobuf_encoding().map_err(IdentityError::Encode)?;
            let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
            // A leftover from a crash may carry other permissions; the mode applies only on creation.
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &tmp)(e)),
                _ => {}
            }
            let mut file =
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io("create", &tmp))?;
            file.write_all(&bytes).map_err(io("write", &tmp))?;
            file.sync_all().map_err(io("sync", &tmp))?;
            drop(file);
            fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
            File::open(data_dir).and_then(|d| d.sync_all()).map_err(io("sync the directory of", &path))?;
            tracing::debug!(path = %path.display(), peer = %keypair.public().to_peer_id(), "new node key created");
            Ok(keypair)
        }
        Err(e) => Err(io("read", &path)(e)),
    }
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
