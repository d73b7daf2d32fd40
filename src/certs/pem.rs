//! Reading the PEM files of a pair: certificates in order, exactly one private key.

use std::fs;
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use super::CertError;

/// The DER of every `CERTIFICATE` section of `bytes` (the content of `path`), in
/// order; at least one.
pub(super) fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    let certs: Vec<Vec<u8>> = parse(path, bytes)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| der)
        .collect();
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The one private key of `bytes` (the content of `path`).
pub(super) fn private_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    let mut keys: Vec<PrivateKeyDer<'static>> = parse(path, bytes)?
        .into_iter()
        .filter_map(|(kind, der)| match kind {
            SectionKind::PrivateKey => Some(PrivatePkcs8KeyDer::from(der).into()),
            SectionKind::RsaPrivateKey => Some(PrivatePkcs1KeyDer::from(der).into()),
            SectionKind::EcPrivateKey => Some(PrivateSec1KeyDer::from(der).into()),
            _ => None,
        })
        .collect();
    match keys.len() {
        1 => Ok(keys.remove(0)),
        // The PEM reader skips sections it does not know, encrypted keys among them:
        // say so rather than "no key".
        0 if contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => {
            Err(CertError::EncryptedKey {
                path: path.to_path_buf(),
            })
        }
        0 => Err(CertError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
        count => Err(CertError::SeveralKeys {
            path: path.to_path_buf(),
            count,
        }),
    }
}

/// The content of `path`.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, CertError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| match e {
            // The file ends inside a section: typically caught half-written.
            pem::Error::MissingSectionEnd { end_marker } => CertError::PemTruncated {
                path: path.to_path_buf(),
                label: String::from_utf8_lossy(&end_marker).into_owned(),
            },
            other => CertError::Pem {
                path: path.to_path_buf(),
                reason: describe(&other),
            },
        })
}

/// The PEM reader's complaint in words: its `Display` prints the offending bytes
/// as a list of numbers.
fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed section start line {:?}",
            String::from_utf8_lossy(line).trim_end()
        ),
        other => other.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
