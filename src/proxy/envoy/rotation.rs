//! An in-place rotation, as the Envoy driver carries it out: the `--cert` pairs are
//! read, checked and written into their SDS resources ([`super::sds`]), then baton
//! waits until Envoy's admin `/certs` lists every new leaf. Envoy says nothing when it
//! rejects a resource file (it logs and keeps the old secret), so a pair not listed by
//! the deadline is a failure: its file is put back to the pair Envoy still serves, so
//! that the next epoch starts with what is served, and the failure is reported.
//!
//! The serial alone could name two certificates (a self-signed one reissued with the
//! same serial), so a leaf counts as served when a certificate with its serial *and* its
//! notAfter is listed.

use std::time::{Duration, Instant};

use super::admin::{Admin, ServedCert};
use super::sds::Secrets;
use crate::proxy::{PreflightError, Rotated};
use crate::supervisor::{CertInfo, FailureReason};

/// How long Envoy gets to serve a new pair (it takes a few milliseconds).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two `/certs` requests while waiting.
const POLL: Duration = Duration::from_millis(5);

/// Check the pairs, hand the changed ones to Envoy, and confirm it serves them.
pub async fn rotate(secrets: &Secrets, admin: &Admin) -> Result<Rotated, PreflightError> {
    let staged = secrets.stage()?;
    let certs: Vec<CertInfo> = staged.after.iter().map(|h| h.info.clone()).collect();
    if staged.changed.is_empty() {
        return Ok(Rotated {
            certs,
            changed: false,
        });
    }
    let wanted: Vec<CertInfo> = staged
        .changed
        .iter()
        .map(|&i| staged.after[i].info.clone())
        .collect();
    match confirm(admin, &wanted, CONFIRM_TIMEOUT).await {
        Ok(()) => Ok(Rotated {
            certs,
            changed: true,
        }),
        Err(why) => {
            let restored = match secrets.restore(&staged) {
                Ok(()) => "its SDS resource holds the served pair again".to_string(),
                Err(e) => format!("putting the served pair back failed too: {}", e.message),
            };
            Err(PreflightError::new(
                FailureReason::Config,
                format!(
                    "envoy did not serve {} within {}s ({why}; envoy's log says why); {restored}",
                    describe(&wanted),
                    CONFIRM_TIMEOUT.as_secs()
                ),
            ))
        }
    }
}

/// Wait until `/certs` lists every leaf of `wanted`; `Err` with what was seen last.
pub async fn confirm(admin: &Admin, wanted: &[CertInfo], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match admin.served_certs().await {
            Ok(served) if wanted.iter().all(|w| serves(&served, w)) => return Ok(()),
            Ok(served) => {
                let serials: Vec<&str> = served.iter().map(|c| c.serial.as_str()).collect();
                format!("it serves serials {serials:?}")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `served` lists the leaf `cert`.
fn serves(served: &[ServedCert], cert: &CertInfo) -> bool {
    let serial = normal_serial(&cert.serial);
    served.iter().any(|c| {
        normal_serial(&c.serial) == serial && c.not_after.is_none_or(|t| t == cert.not_after)
    })
}

/// Hex without leading zeros, lower case: openssl and Envoy pad differently.
fn normal_serial(serial: &str) -> String {
    let trimmed = serial.trim().trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_ascii_lowercase()
    }
}

fn describe(certs: &[CertInfo]) -> String {
    let each: Vec<String> = certs
        .iter()
        .map(|c| format!("{} (serial {})", c.path, c.serial))
        .collect();
    each.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(serial: &str, not_after: i64) -> CertInfo {
        CertInfo {
            path: "/c/tls.crt".into(),
            subject: "CN=x".into(),
            serial: serial.into(),
            not_before: 0,
            not_after,
        }
    }

    fn served(serial: &str, not_after: Option<i64>) -> ServedCert {
        ServedCert {
            serial: serial.into(),
            not_after,
        }
    }

    #[test]
    fn a_leaf_is_served_when_serial_and_expiry_are_listed_whatever_the_padding() {
        let list = [served("abc", Some(10)), served("1001", None)];
        assert!(serves(&list, &info("0ABC", 10)));
        assert!(
            serves(&list, &info("1001", 99)),
            "no expiry listed: serial decides"
        );
        assert!(
            !serves(&list, &info("ABC", 11)),
            "same serial, other certificate"
        );
        assert!(!serves(&list, &info("2002", 10)));
        assert!(!serves(&[], &info("0", 0)));
        assert_eq!(normal_serial("00"), "0");
    }
}
