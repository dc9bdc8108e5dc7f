//! Where the command finds its authkey: `--authkey-file`, `--generate-authkey-file` (serve only)
//! or the `MANAGER_AUTHKEY` environment variable. The key itself is never printed or logged:
//! messages name only the file or the variable it came from.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use manager::AuthKey;

use crate::Failure;

/// The environment variable holding the authkey.
pub(crate) const ENV: &str = "MANAGER_AUTHKEY";

/// What to tell a user who gave no key.
const NO_KEY_HINT: &str =
    "set the MANAGER_AUTHKEY environment variable or pass --authkey-file PATH";

/// The key of a client command (`info`, `shutdown`): from `--authkey-file` if given, else from
/// `MANAGER_AUTHKEY`. With neither there is nothing to authenticate with.
pub(crate) fn client_key(file: Option<&Path>) -> Result<AuthKey, Failure> {
    if let Some(path) = file {
        return read_key_file(path);
    }
    env_key().ok_or_else(|| {
        Failure::usage(format!(
            "no authkey to authenticate to the server with: {NO_KEY_HINT}"
        ))
    })
}

/// The key of `serve`: `--authkey-file`, else a key freshly written to `--generate-authkey-file`,
/// else `MANAGER_AUTHKEY`. With none of them the server refuses to start: a server without a key
/// the operator chose would either be open to anyone or unusable.
pub(crate) fn server_key(file: Option<&Path>, generate: Option<&Path>) -> Result<AuthKey, Failure> {
    if let Some(path) = file {
        return read_key_file(path);
    }
    if let Some(path) = generate {
        return generate_key_file(path);
    }
    env_key().ok_or_else(|| {
        Failure::usage(format!(
            "refusing to serve without an authkey: {NO_KEY_HINT}, \
             or pass --generate-authkey-file PATH to write a fresh random key for clients to use"
        ))
    })
}

/// `MANAGER_AUTHKEY`, if set and not empty (an empty variable counts as unset, as it does for
/// the library).
fn env_key() -> Option<AuthKey> {
    std::env::var_os(ENV)
        .map(OsString::into_vec)
        .filter(|bytes| !bytes.is_empty())
        .map(AuthKey::from)
}

/// Reads a key file: its bytes less any trailing newline (`\n` or `\r\n`).
fn read_key_file(path: &Path) -> Result<AuthKey, Failure> {
    let shown = path.display();
    let mut bytes = std::fs::read(path)
        .map_err(|e| Failure::usage(format!("cannot read the authkey file {shown}: {e}")))?;
    let len = trimmed_len(&bytes);
    bytes.truncate(len);
    if bytes.is_empty() {
        return Err(Failure::usage(format!("the authkey file {shown} is empty")));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the authkey file {shown} can be read by other users (mode {:o}); \
                 `chmod 600 {shown}` keeps the key to its owner",
                mode & 0o777
            );
        }
    }
    Ok(AuthKey::from(bytes))
}

/// The length of `bytes` without trailing line ends.
fn trimmed_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |last| last + 1)
}

/// Writes a fresh random key (64 hex digits and a newline) to a new file that only its owner
/// may read, and returns it. An existing file is never overwritten.
fn generate_key_file(path: &Path) -> Result<AuthKey, Failure> {
    let shown = path.display();
    let text = hex(AuthKey::random().as_bytes());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::usage(format!(
                    "{shown} already exists; --generate-authkey-file never overwrites a file: \
                     reuse its key with --authkey-file {shown}, or remove it first"
                ))
            } else {
                Failure::usage(format!("cannot create the authkey file {shown}: {e}"))
            }
        })?;
    let written = file
        .write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Failure::usage(format!(
            "cannot write the authkey file {shown}: {e}"
        )));
    }
    tracing::info!("wrote a new random authkey to {shown}");
    Ok(AuthKey::from(text.as_str()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_line_ends_are_trimmed() {
        assert_eq!(trimmed_len(b"key\n"), 3);
        assert_eq!(trimmed_len(b"key\r\n\n"), 3);
        assert_eq!(trimmed_len(b"key with space \n"), 15);
        assert_eq!(trimmed_len(b"\n\n"), 0);
        assert_eq!(trimmed_len(b""), 0);
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
