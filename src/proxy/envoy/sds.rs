//! `--cert-rotation sds`: each `--cert` pair reaches Envoy as an SDS secret that baton
//! writes into its own config dir (`sds-cert-<n>.json`, a `DiscoveryResponse` with the
//! certificate chain and key inline), and that every epoch's bootstrap names through a
//! `path_config_source`. Envoy reloads such a file when a new one is renamed over it
//! and swaps the certificate in place: no new process, no drain.
//!
//! Why files and not a gRPC SDS server: Envoy needs nothing else (no cluster, no socket,
//! no stream to keep per epoch); a new epoch and `envoy --mode validate` read the same
//! resource at start, so an epoch starts with exactly the pair baton holds; `baton
//! render` shows a path; and what a killed baton leaves is one file the next sweep
//! removes. What files lack is an ACK: Envoy says nothing when it rejects one, so baton
//! confirms through the admin `/certs` instead (see [`super::rotation`]).
//!
//! **Invariant:** Envoy only ever sees pairs that passed their checks (the bytes checked
//! are the bytes written, read once), and the files hold exactly [`Secrets::held`] at
//! every point where a task may be aborted: reading, checking, writing and recording
//! happen in one synchronous step under one lock.
//! **Invariant:** the files are mode 0600 from creation (they hold private keys),
//! appear whole or not at all (temp file, rename), and are removed when the
//! [`Secrets`] are dropped (what a killed baton leaves, the leftovers sweep removes).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::json;

use crate::bootstrap::{self, CertPair, SdsSecret};
use crate::proxy::{cert_info, PreflightError};
use crate::supervisor::{CertInfo, FailureReason};

/// The `@type` of an SDS secret.
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// One pair as baton holds it: the PEM texts it checked and wrote, and what they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    cert_pem: String,
    key_pem: String,
    /// The leaf, as checked.
    pub info: CertInfo,
}

/// What a rotation changed, to confirm it or take it back.
#[derive(Debug)]
pub struct Staged {
    /// What the files held before.
    pub before: Vec<Held>,
    /// What they hold now.
    pub after: Vec<Held>,
    /// Indices of the pairs whose files were rewritten.
    pub changed: Vec<usize>,
}

/// The SDS resources of one baton: one file per `--cert` pair.
#[derive(Debug)]
pub struct Secrets {
    pairs: Vec<CertPair>,
    secrets: Vec<SdsSecret>,
    /// What the files hold; `None` until the first epoch's preflight wrote them.
    held: Mutex<Option<Vec<Held>>>,
}

impl Secrets {
    /// The resources for `pairs`, one [`SdsSecret`] each, in order.
    pub fn new(pairs: Vec<CertPair>, secrets: Vec<SdsSecret>) -> Self {
        Secrets {
            pairs,
            secrets,
            held: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Vec<Held>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the files hold (empty before the first epoch's preflight).
    pub fn held(&self) -> Vec<CertInfo> {
        self.lock()
            .iter()
            .flatten()
            .map(|h| h.info.clone())
            .collect()
    }

    /// For an epoch's preflight: the pairs it will start with, present in their files
    /// before Envoy (or its validator) reads them. The first time, the `--cert` files
    /// are read, checked and written; later, the pairs held are checked again (a new
    /// epoch never starts on an expired one) and rewritten only if a file went missing
    /// or changed. Changed `--cert` files reach Envoy by a rotation, not here.
    pub fn prepare(&self) -> Result<Vec<CertInfo>, PreflightError> {
        let mut held = self.lock();
        let pairs = match held.as_ref() {
            None => self.read_checked()?,
            Some(pairs) => {
                let now = SystemTime::now();
                for (pair, h) in self.pairs.iter().zip(pairs) {
                    check(pair, &h.cert_pem, &h.key_pem, now).map_err(|e| {
                        cert_error(format!("the pair served through SDS: {}", e.message))
                    })?;
                }
                pairs.clone()
            }
        };
        for (i, h) in pairs.iter().enumerate() {
            let text = resource(&self.secrets[i].name, h);
            let path = &self.secrets[i].path;
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                write(path, &text)?;
            }
        }
        let infos = pairs.iter().map(|h| h.info.clone()).collect();
        *held = Some(pairs);
        Ok(infos)
    }

    /// For a rotation: read and check every `--cert` pair, and write those that differ
    /// from what is held. `Err` (nothing written) when a pair fails its checks.
    pub fn stage(&self) -> Result<Staged, PreflightError> {
        let mut held = self.lock();
        let after = self.read_checked()?;
        let before = held.clone().unwrap_or_default();
        let changed: Vec<usize> = (0..after.len())
            .filter(|&i| before.get(i) != Some(&after[i]))
            .collect();
        for (done, &i) in changed.iter().enumerate() {
            let written = write(
                &self.secrets[i].path,
                &resource(&self.secrets[i].name, &after[i]),
            );
            if let Err(e) = written {
                // Take back what was written, so the files still hold `before`.
                for &j in &changed[..done] {
                    if let Some(old) = before.get(j) {
                        let _ = write(&self.secrets[j].path, &resource(&self.secrets[j].name, old));
                    }
                }
                return Err(e);
            }
        }
        *held = Some(after.clone());
        Ok(Staged {
            before,
            after,
            changed,
        })
    }

    /// Put back what `staged` replaced (Envoy did not serve it).
    pub fn restore(&self, staged: &Staged) -> Result<(), PreflightError> {
        let mut held = self.lock();
        for &i in &staged.changed {
            if let Some(old) = staged.before.get(i) {
                write(&self.secrets[i].path, &resource(&self.secrets[i].name, old))?;
            }
        }
        *held = Some(staged.before.clone());
        Ok(())
    }

    /// Every pair, read once and checked.
    fn read_checked(&self) -> Result<Vec<Held>, PreflightError> {
        let now = SystemTime::now();
        self.pairs
            .iter()
            .map(|pair| {
                let cert_pem = read_text(&pair.cert)?;
                let key_pem = read_text(&pair.key)?;
                let info = check(pair, &cert_pem, &key_pem, now)?;
                Ok(Held {
                    cert_pem,
                    key_pem,
                    info,
                })
            })
            .collect()
    }
}

/// The files hold private keys: they go with the driver (baton exits), not only with
/// the exit sweep, which would report them as left behind.
impl Drop for Secrets {
    fn drop(&mut self) {
        for s in &self.secrets {
            if let Err(e) = std::fs::remove_file(&s.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %s.path.display(), error = %e, "could not remove an SDS resource");
                }
            }
        }
    }
}

fn check(
    pair: &CertPair,
    cert_pem: &str,
    key_pem: &str,
    now: SystemTime,
) -> Result<CertInfo, PreflightError> {
    crate::certs::check_pem(
        &pair.cert,
        cert_pem.as_bytes(),
        &pair.key,
        key_pem.as_bytes(),
        now,
    )
    .map(|summary| cert_info(pair, summary))
    .map_err(|e| cert_error(e.to_string()))
}

fn cert_error(message: String) -> PreflightError {
    PreflightError::new(FailureReason::Cert, message)
}

/// A PEM file as text (Envoy takes the pair inline, as a string).
fn read_text(path: &Path) -> Result<String, PreflightError> {
    let bytes = std::fs::read(path)
        .map_err(|e| cert_error(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| cert_error(format!("{}: not PEM text (not UTF-8)", path.display())))
}

/// The SDS resource file of secret `name` holding `pair`: what Envoy's filesystem
/// subscription reads, a `DiscoveryResponse` with the one secret.
fn resource(name: &str, pair: &Held) -> String {
    let response = json!({
        "resources": [{
            "@type": SECRET_TYPE,
            "name": name,
            "tls_certificate": {
                "certificate_chain": { "inline_string": pair.cert_pem },
                "private_key": { "inline_string": pair.key_pem },
            },
        }],
    });
    let mut text = serde_json::to_string_pretty(&response).unwrap_or_else(|_| response.to_string());
    text.push('\n');
    text
}

/// Rename a complete file over `path`: Envoy reloads on the rename. No fsync: the
/// files are rewritten at every start, and an fsync would only delay the rotation.
fn write(path: &Path, text: &str) -> Result<(), PreflightError> {
    bootstrap::write_private(path, text.as_bytes()).map_err(|e| {
        cert_error(format!(
            "cannot write the SDS resource {}: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
#[path = "sds_tests.rs"]
mod tests;
