//! Validating a `--cert CERT:KEY` pair before a restart puts it in front of traffic.
//!
//! [`check_pair`] answers one question — would the proxy serve this pair correctly
//! right now? — with either a [`CertSummary`] to log or a [`CertError`] naming the
//! file at fault. In order:
//! 1. both files are PEM; the certificate file holds at least one certificate, the
//!    key file exactly one unencrypted private key (PKCS#8, PKCS#1 RSA or SEC1 EC);
//! 2. the chain runs from the leaf upwards: each certificate's issuer is the next
//!    one's subject, and its signature verifies with the next one's key;
//! 3. the private key matches the leaf's public key (see [`key`]);
//! 4. the leaf is inside its validity window at `now`.
//!
//! The chain is checked before the key so that a reversed chain (CA first) is
//! reported as such, not as a key that fails to match the CA.
//!
//! **Invariant:** a pair caught half-way through a rotation (new certificate, old
//! key, or one file still being written) is always an error, never a summary.
//! **Boundary:** trust is not checked: whether the chain ends at a root anyone trusts
//! is the clients' business, and the proxy would serve it either way.

mod error;
pub mod key;
mod pem;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

pub use error::CertError;
pub use key::KeyKind;

/// What a valid pair holds, for logging the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The leaf's serial number in upper-case hex without leading zeros, as
    /// `openssl x509 -noout -serial` prints it.
    pub serial: String,
    /// The leaf's subject, e.g. `CN=example.com, O=Example`.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// Start of the leaf's validity window.
    pub not_before: SystemTime,
    /// End of the leaf's validity window.
    pub not_after: SystemTime,
    /// The key's kind and size.
    pub key: KeyKind,
    /// How many certificates the file holds (leaf included).
    pub chain_len: usize,
}

/// Check that `cert` and `key` form a pair the proxy can serve at `now` (see the
/// module doc for every check). `now` is a parameter so that expiry is testable and
/// so that a caller can ask "will it still be valid in an hour?".
pub fn check_pair(cert: &Path, key: &Path, now: SystemTime) -> Result<CertSummary, CertError> {
    check_pem(cert, &pem::read(cert)?, key, &pem::read(key)?, now)
}

/// [`check_pair`] on contents already read: `cert_pem` from `cert`, `key_pem` from
/// `key` (the paths name the files in errors). A caller that hands on what it read
/// checks exactly the bytes it hands on.
pub fn check_pem(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
    now: SystemTime,
) -> Result<CertSummary, CertError> {
    let ders = pem::certificates(cert, cert_pem)?;
    let private = pem::private_key(key, key_pem)?;

    let mut chain = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let parsed = X509Certificate::from_der(der).map_err(|e| CertError::BadCertificate {
            path: cert.to_path_buf(),
            index: i + 1,
            reason: e.to_string(),
        })?;
        chain.push(parsed.1);
    }
    check_chain(cert, &chain)?;
    let Some(leaf) = chain.first() else {
        // `certificates` guarantees one; stay total anyway.
        return Err(CertError::NoCertificate {
            path: cert.to_path_buf(),
        });
    };

    let cert_key = key::public_of_certificate(leaf.public_key()).map_err(|reason| {
        CertError::UnsupportedCertificateKey {
            path: cert.to_path_buf(),
            reason,
        }
    })?;
    let key_key = key::public_of_private(&private).map_err(|reason| CertError::BadKey {
        path: key.to_path_buf(),
        reason,
    })?;
    if cert_key != key_key {
        return Err(CertError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
        });
    }

    let validity = leaf.validity();
    let now_secs = unix_seconds(now);
    if now_secs < validity.not_before.timestamp() {
        return Err(CertError::NotYetValid {
            path: cert.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(CertError::Expired {
            path: cert.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }

    Ok(CertSummary {
        serial: serial_hex(leaf.raw_serial()),
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        not_before: system_time(validity.not_before),
        not_after: system_time(validity.not_after),
        key: key_key.kind(),
        chain_len: chain.len(),
    })
}

fn check_chain(path: &Path, chain: &[X509Certificate<'_>]) -> Result<(), CertError> {
    for (i, pair) in chain.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        // Raw DER comparison, as Go's and BoringSSL's chain builders start with: a CA
        // that re-encodes its own name differently is broken for them too.
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(CertError::ChainOrder {
                path: path.to_path_buf(),
                index: i + 1,
                issuer: child.issuer().to_string(),
                next_subject: parent.subject().to_string(),
            });
        }
        match child.verify_signature(Some(parent.public_key())) {
            Ok(()) => {}
            // ring cannot check every algorithm (RSA-PSS with odd parameters, DSA…);
            // the proxy does not check the chain's signatures either, so an
            // uncheckable one is let through rather than blocking a rotation.
            Err(X509Error::SignatureUnsupportedAlgorithm) => {
                tracing::debug!(path = %path.display(), index = i + 1, "chain signature algorithm not checkable");
            }
            Err(e) => {
                return Err(CertError::ChainSignature {
                    path: path.to_path_buf(),
                    index: i + 1,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Upper-case hex without the sign-padding zero bytes DER adds; "0" for zero.
fn serial_hex(raw: &[u8]) -> String {
    let skip = raw.iter().take_while(|&&b| b == 0).count();
    match &raw[skip..] {
        [] => "0".to_string(),
        digits => hex::encode_upper(digits),
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs())
            .map(|s| -s)
            .unwrap_or(i64::MIN),
    }
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    let shifted = if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    // X.509 times end in 9999, which every SystemTime on a 64-bit Unix can hold.
    shifted.unwrap_or(UNIX_EPOCH)
}
