//! The SDS resources as files: what is written, when, and what a refusal leaves.
//! Pairs are made by the real `openssl` CLI in a temp dir per test.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A self-signed EC pair for localhost with `serial`, as `<name>.crt` / `<name>.key`.
fn pair(dir: &Path, name: &str, serial: u32) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-set_serial", &serial.to_string()])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `--cert <dir>/tls.crt:<dir>/tls.key`, secrets in `<dir>/cfg`, files holding `name`.
struct Setup {
    dir: tempfile::TempDir,
    secrets: Secrets,
}

impl Setup {
    fn new(first: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = CertPair {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let setup = Setup {
            secrets: Secrets::new(vec![live], vec![SdsSecret::of(&dir.path().join("cfg"), 0)]),
            dir,
        };
        setup.install(first, first);
        setup
    }

    /// Put the certificate of `cert_serial` and the key of `key_serial` in place.
    fn install(&self, cert_serial: u32, key_serial: u32) {
        let (c, _) = pair(self.dir.path(), &format!("p{cert_serial}"), cert_serial);
        let key = self.dir.path().join(format!("p{key_serial}.key"));
        if !key.exists() {
            pair(self.dir.path(), &format!("p{key_serial}"), key_serial);
        }
        std::fs::copy(c, self.dir.path().join("tls.crt")).unwrap();
        std::fs::copy(key, self.dir.path().join("tls.key")).unwrap();
    }

    fn resource(&self) -> PathBuf {
        self.dir.path().join("cfg/sds-cert-0.json")
    }

    fn resource_json(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.resource()).unwrap()).unwrap()
    }
}

#[test]
fn the_first_epoch_writes_the_checked_pair_inline_private_and_later_ones_leave_it() {
    let s = Setup::new(0x1001);
    let infos = s.secrets.prepare().unwrap();
    assert_eq!(infos[0].serial, "1001");
    let file = s.resource();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let json = s.resource_json();
    let secret = &json["resources"][0];
    assert_eq!(secret["@type"], SECRET_TYPE);
    assert_eq!(secret["name"], "baton-cert-0");
    let tls = &secret["tls_certificate"];
    let live_cert = std::fs::read_to_string(s.dir.path().join("tls.crt")).unwrap();
    assert_eq!(
        tls["certificate_chain"]["inline_string"],
        live_cert.as_str()
    );
    assert!(tls["private_key"]["inline_string"]
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));

    // A new epoch starts with what is held, not with changed --cert files...
    s.install(0x2002, 0x2002);
    assert_eq!(s.secrets.prepare().unwrap(), infos);
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        meta.ino(),
        "not rewritten"
    );
    // ...and finds its resource even if it went missing.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(s.secrets.prepare().unwrap(), infos);
    assert_eq!(s.resource_json()["resources"][0]["tls_certificate"], *tls);
    // The keys go with the driver.
    let Setup { dir, secrets } = s;
    drop(secrets);
    assert!(!file.exists());
    drop(dir);
}

#[test]
fn a_rotation_writes_only_a_pair_that_passed_and_can_be_taken_back() {
    let s = Setup::new(0x1001);
    s.secrets.prepare().unwrap();
    let first = s.resource_json();

    let same = s.secrets.stage().unwrap();
    assert!(same.changed.is_empty());

    // Half-finished: the new certificate with the old key. Refused, nothing written.
    s.install(0x2002, 0x1001);
    let refused = s.secrets.stage().unwrap_err();
    assert_eq!(refused.reason, FailureReason::Cert);
    assert!(
        refused.message.contains("does not match"),
        "{}",
        refused.message
    );
    assert_eq!(s.resource_json(), first);
    assert_eq!(s.secrets.held()[0].serial, "1001");

    s.install(0x2002, 0x2002);
    let staged = s.secrets.stage().unwrap();
    assert_eq!(staged.changed, vec![0]);
    assert_eq!(staged.after[0].info.serial, "2002");
    assert_eq!(s.secrets.held()[0].serial, "2002");
    assert_ne!(s.resource_json(), first);

    s.secrets.restore(&staged).unwrap();
    assert_eq!(s.resource_json(), first);
    assert_eq!(s.secrets.held()[0].serial, "1001");
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path().join("cfg"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["sds-cert-0.json"], "no temp file left");
}

#[test]
fn a_half_written_file_is_refused_naming_it() {
    let s = Setup::new(0x1001);
    s.secrets.prepare().unwrap();
    let cert = s.dir.path().join("tls.crt");
    let whole = std::fs::read_to_string(&cert).unwrap();
    std::fs::write(&cert, &whole[..whole.len() / 2]).unwrap();
    let refused = s.secrets.stage().unwrap_err();
    assert!(
        refused.message.contains("tls.crt")
            && refused.message.contains("-----END CERTIFICATE-----"),
        "{}",
        refused.message
    );
    let garbage = [0xff, 0xfe, b'\n'];
    std::fs::write(&cert, garbage).unwrap();
    let refused = s.secrets.stage().unwrap_err();
    assert!(
        refused.message.contains("not PEM text"),
        "{}",
        refused.message
    );
}
