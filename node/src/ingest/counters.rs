//! The replay windows' highest counters, saved across a clean restart (`<data>/auth-counters`).
//!
//! One line per keyed device that has sent: `dialect device highest fingerprint` (the
//! fingerprint names the key: `proto::auth::Key::fingerprint`, 16 hex digits). Written
//! when the node stops (atomically: a temporary file, fsync, rename); read at start, where
//! each line resumes its device's window if the device still has the same key. A node
//! that crashed has not written it: its windows start again from each device's next
//! datagram (`docs/protocol.md`, "Restart").

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use telemesh_proto::auth;
use telemesh_proto::wire::Dialect;

/// The file's name in the data directory.
pub const FILE: &str = "auth-counters";
/// Most bytes read back (two lines per device id and dialect fit many times over).
const MAX_BYTES: u64 = 16 << 20;

/// One device's saved counter: `(device, highest, fingerprint)`.
pub type Entry = (u16, u32, [u8; 8]);
/// Saved counters by dialect.
pub type Saved = HashMap<Dialect, Vec<Entry>>;

/// Reads the saved counters; a missing file is none. Lines that do not parse are skipped
/// (counted in the warning): the file is the node's own, and a bad line only means less
/// replay protection until the device sends again.
pub fn load(data_dir: &Path) -> Saved {
    let path = data_dir.join(FILE);
    let mut text = String::new();
    let read = std::fs::File::open(&path).and_then(|f| f.take(MAX_BYTES).read_to_string(&mut text));
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the saved replay counters");
            return Saved::new();
        }
    }
    let mut saved = Saved::new();
    let mut bad = 0usize;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some((dialect, entry)) => saved.entry(dialect).or_default().push(entry),
            None => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!(path = %path.display(), lines = bad, "saved replay counters: lines skipped");
    }
    saved
}

fn parse_line(line: &str) -> Option<(Dialect, Entry)> {
    let mut fields = line.split_whitespace();
    let dialect: Dialect = fields.next()?.parse().ok()?;
    let device: u16 = fields.next()?.parse().ok()?;
    let highest: u32 = fields.next()?.parse().ok()?;
    let mut fingerprint = [0u8; 8];
    hex::decode_to_slice(fields.next()?, &mut fingerprint).ok()?;
    fields.next().is_none().then_some((dialect, (device, highest, fingerprint)))
}

/// Writes `verifiers`' counters, replacing the file.
pub fn save(data_dir: &Path, verifiers: &[(Dialect, &auth::Verifier)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (dialect, verifier) in verifiers {
        for (device, highest, fingerprint) in verifier.saved() {
            text.push_str(&format!("{dialect} {device} {highest} {}\n", hex::encode(fingerprint)));
        }
    }
    let path = data_dir.join(FILE);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_counters_round_trip_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).is_empty(), "no file: nothing saved");
        let key = auth::Key::new([3; 32]);
        let mut keys = auth::Keys::default();
        keys.insert(Dialect::Tinytelemetry, 9, key.clone());
        let mut verifier = auth::Verifier::new(Dialect::Tinytelemetry, &keys, false);
        let mut datagram = vec![1, 2, 0, 9, 0, 0, 0, 1, 0, 0, 0, 1];
        auth::seal(Dialect::Tinytelemetry, &key, 77, &mut datagram).expect("fits");
        assert!(verifier.verify(&datagram).is_ok());
        save(dir.path(), &[(Dialect::Tinytelemetry, &verifier)]).expect("saves");
        let text = std::fs::read_to_string(dir.path().join(FILE)).expect("written");
        assert_eq!(text, format!("tinytelemetry 9 77 {}\n", hex::encode(key.fingerprint())));
        std::fs::write(dir.path().join(FILE), format!("{text}garbage\niotstream 1 2\niotstream x 1 00\n")).expect("w");
        let saved = load(dir.path());
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[&Dialect::Tinytelemetry], vec![(9, 77, key.fingerprint())]);
    }
}
