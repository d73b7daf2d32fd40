//! Everything that can be wrong with a `--cert CERT:KEY` pair.

use std::io;
use std::path::PathBuf;

/// Why a certificate/key pair was rejected. Each message starts with the file at
/// fault, so an operator knows which one to fix.
///
/// Every variant means the same to the supervisor: keep the serving epoch and wait for
/// the next change (a rotation may be half-finished). They are distinct so that logs
/// and metrics can say what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not well-formed PEM (bad base64, a section without its end line…).
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The file ends inside a PEM section: it lacks the section's end line,
    /// typically because it was read while being written.
    #[error("{}: missing \"-----END {label}-----\" (the file ends inside its {label} section; written only in part?)", path.display())]
    PemTruncated {
        /// The file.
        path: PathBuf,
        /// The label of the unfinished section (`CERTIFICATE`, `PRIVATE KEY`…).
        label: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// A certificate in the file is not a valid X.509 certificate.
    #[error("{}: certificate #{index} cannot be parsed: {reason}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// Its position in the file, from 1.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// The leaf certificate's public key is of a kind that cannot be checked.
    #[error("{}: unsupported certificate key: {reason}", path.display())]
    UnsupportedCertificateKey {
        /// The certificate file.
        path: PathBuf,
        /// Which kind, or what failed.
        reason: String,
    },
    /// The key file holds no private key in a supported PEM form.
    #[error(
        "{}: no private key found (expected PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
        path.display()
    )]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key file holds an encrypted private key; the proxy could not use it either.
    #[error("{}: encrypted private keys are not supported", path.display())]
    EncryptedKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key file holds more than one private key: which one the proxy uses is
    /// ambiguous.
    #[error("{}: {count} private keys found, expected exactly one", path.display())]
    SeveralKeys {
        /// The key file.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// The private key is malformed, inconsistent, or of an unsupported kind or size
    /// (RSA below 2048 bits, curves other than P-256/P-384, …).
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key is not the leaf certificate's: typically a rotation caught
    /// half-way (new certificate, old key).
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The leaf certificate has expired.
    #[error("{}: certificate expired (notAfter {not_after})", path.display())]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Its notAfter, as written in the certificate.
        not_after: String,
    },
    /// The leaf certificate is not valid yet.
    #[error("{}: certificate not valid yet (notBefore {not_before})", path.display())]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Its notBefore, as written in the certificate.
        not_before: String,
    },
    /// Certificate `index` was not issued by the one after it: the chain must run
    /// from the leaf towards the root.
    #[error(
        "{}: chain out of order: certificate #{index} is issued by `{issuer}` but certificate #{} is `{next_subject}`",
        path.display(), index + 1
    )]
    ChainOrder {
        /// The certificate file.
        path: PathBuf,
        /// Position of the certificate whose issuer does not follow, from 1.
        index: usize,
        /// Its issuer.
        issuer: String,
        /// The subject of the certificate that follows it.
        next_subject: String,
    },
    /// Certificate `index` names the next one as issuer but its signature does not
    /// verify with the next one's key.
    #[error(
        "{}: chain broken: certificate #{index} is not signed by certificate #{}: {reason}",
        path.display(), index + 1
    )]
    ChainSignature {
        /// The certificate file.
        path: PathBuf,
        /// Position of the certificate whose signature fails, from 1.
        index: usize,
        /// What verification said.
        reason: String,
    },
}
