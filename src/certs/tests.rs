//! Pairs made by the real `openssl` CLI in a unique temp dir per test.
//!
//! OpenSSL 3.0 cannot backdate a certificate (`-not_before` arrived in 3.4), so the
//! validity window is tested by moving `now` instead — which is why it is a parameter.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use super::key::Curve;
use super::*;

const DAY: Duration = Duration::from_secs(86_400);

struct Dir(TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Run openssl in the temp dir; any failure fails the test with its stderr.
    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.0.path())
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn openssl_stdout(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.0.path())
            .output()
            .expect("openssl runs");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn key(&self, name: &str, kind: Key) -> PathBuf {
        match kind {
            Key::RsaPkcs8 => self.openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                name,
            ]),
            Key::RsaPkcs1 => self.openssl(&["genrsa", "-traditional", "-out", name, "2048"]),
            Key::EcSec1(curve) => {
                self.openssl(&["ecparam", "-name", curve, "-genkey", "-noout", "-out", name])
            }
            Key::EcPkcs8(curve) => self.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
                "-out",
                name,
            ]),
            Key::Ed25519 => self.openssl(&["genpkey", "-algorithm", "ED25519", "-out", name]),
        }
        self.path(name)
    }

    /// A self-signed certificate for `key`, valid for 30 days from now.
    fn self_signed(&self, name: &str, key: &Path, cn: &str) -> PathBuf {
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path_str(key),
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "30",
            "-set_serial",
            "0x0a1b2c",
            "-out",
            name,
        ]);
        self.path(name)
    }

    /// A leaf for `key` issued by `ca` (certificate and key).
    fn issued(&self, name: &str, key: &Path, ca: &Path, ca_key: &Path) -> PathBuf {
        let csr = format!("{name}.csr");
        self.openssl(&[
            "req",
            "-new",
            "-key",
            path_str(key),
            "-subj",
            "/CN=leaf.example",
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            path_str(ca),
            "-CAkey",
            path_str(ca_key),
            "-set_serial",
            "4660",
            "-days",
            "30",
            "-out",
            name,
        ]);
        self.path(name)
    }

    fn concat(&self, name: &str, parts: &[&Path]) -> PathBuf {
        let mut all = Vec::new();
        for part in parts {
            all.extend(fs::read(part).expect("read part"));
        }
        fs::write(self.path(name), all).expect("write concat");
        self.path(name)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        fs::write(self.path(name), content).expect("write");
        self.path(name)
    }
}

#[derive(Clone, Copy)]
enum Key {
    RsaPkcs8,
    RsaPkcs1,
    EcSec1(&'static str),
    EcPkcs8(&'static str),
    Ed25519,
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The shared table: every supported key encoding makes a valid pair.
fn check_valid_pair(kind: Key, expected: KeyKind) {
    let dir = Dir::new();
    let key = dir.key("tls.key", kind);
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let summary = check_pair(&cert, &key, now()).expect("valid pair");
    assert_eq!(summary.key, expected);
    assert_eq!(summary.serial, "0A1B2C");
    assert_eq!(summary.subject, "CN=example.com");
    assert_eq!(summary.chain_len, 1);
    assert!(summary.not_before <= now() && now() < summary.not_after);
}

#[test]
fn rsa_pkcs8_pair_is_valid() {
    check_valid_pair(Key::RsaPkcs8, KeyKind::Rsa { bits: 2048 });
}

#[test]
fn rsa_pkcs1_pair_is_valid() {
    check_valid_pair(Key::RsaPkcs1, KeyKind::Rsa { bits: 2048 });
}

#[test]
fn ec_p256_sec1_pair_is_valid() {
    check_valid_pair(Key::EcSec1("prime256v1"), KeyKind::Ecdsa(Curve::P256));
}

#[test]
fn ec_p256_pkcs8_pair_is_valid() {
    check_valid_pair(Key::EcPkcs8("P-256"), KeyKind::Ecdsa(Curve::P256));
}

#[test]
fn ec_p384_sec1_pair_is_valid() {
    check_valid_pair(Key::EcSec1("secp384r1"), KeyKind::Ecdsa(Curve::P384));
}

#[test]
fn ec_p384_pkcs8_pair_is_valid() {
    check_valid_pair(Key::EcPkcs8("P-384"), KeyKind::Ecdsa(Curve::P384));
}

#[test]
fn ed25519_pair_is_valid() {
    check_valid_pair(Key::Ed25519, KeyKind::Ed25519);
}

#[test]
fn serial_is_reported_as_openssl_prints_it() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::EcSec1("prime256v1"));
    // A random 20-byte serial, as real CAs issue, often with the top bit set.
    dir.openssl(&[
        "req", "-x509", "-new", "-key", "tls.key", "-subj", "/CN=x", "-days", "1", "-out",
        "tls.crt",
    ]);
    let cert = dir.path("tls.crt");
    let printed = dir.openssl_stdout(&["x509", "-in", "tls.crt", "-noout", "-serial"]);
    let summary = check_pair(&cert, &key, now()).expect("valid pair");
    assert_eq!(format!("serial={}", summary.serial), printed);
}

#[test]
fn half_finished_rotation_new_certificate_old_key_is_a_mismatch() {
    let dir = Dir::new();
    let old_key = dir.key("old.key", Key::RsaPkcs8);
    let new_key = dir.key("new.key", Key::RsaPkcs8);
    let new_cert = dir.self_signed("tls.crt", &new_key, "example.com");
    let err = check_pair(&new_cert, &old_key, now()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: private key does not match the certificate in {}",
            old_key.display(),
            new_cert.display()
        )
    );
}

#[test]
fn key_of_another_kind_is_a_mismatch() {
    let dir = Dir::new();
    let ec_key = dir.key("ec.key", Key::EcSec1("prime256v1"));
    let rsa_key = dir.key("rsa.key", Key::RsaPkcs1);
    let cert = dir.self_signed("tls.crt", &rsa_key, "example.com");
    let err = check_pair(&cert, &ec_key, now()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn ec_key_on_another_curve_is_a_mismatch() {
    let dir = Dir::new();
    let p384 = dir.key("p384.key", Key::EcPkcs8("P-384"));
    let p256 = dir.key("p256.key", Key::EcPkcs8("P-256"));
    let cert = dir.self_signed("tls.crt", &p256, "example.com");
    let err = check_pair(&cert, &p384, now()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn garbage_certificate_file_is_an_error_naming_it() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::Ed25519);
    let cert = dir.write("tls.crt", "this is not a certificate\n");
    let err = check_pair(&cert, &key, now()).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&cert.display().to_string()),
        "{err}"
    );
}

#[test]
fn corrupt_base64_in_a_certificate_is_an_error_naming_the_file() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::Ed25519);
    let cert = dir.write(
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    );
    let err = check_pair(&cert, &key, now()).unwrap_err();
    assert!(matches!(err, CertError::Pem { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&cert.display().to_string()),
        "{err}"
    );
}

#[test]
fn valid_base64_that_is_not_a_certificate_is_an_error_naming_the_file() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::Ed25519);
    let cert = dir.write(
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    let err = check_pair(&cert, &key, now()).unwrap_err();
    assert!(
        matches!(err, CertError::BadCertificate { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn certificate_truncated_mid_write_is_an_error() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::Ed25519);
    let cert = dir.self_signed("full.crt", &key, "example.com");
    let text = fs::read_to_string(&cert).unwrap();
    let half = dir.write("tls.crt", &text[..text.len() / 2]);
    let err = check_pair(&half, &key, now()).unwrap_err();
    assert!(matches!(err, CertError::PemTruncated { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: missing \"-----END CERTIFICATE-----\" (the file ends inside its CERTIFICATE section; written only in part?)",
            half.display()
        )
    );
}

#[test]
fn malformed_section_start_is_reported_as_text_not_bytes() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::Ed25519);
    let cert = dir.write("tls.crt", "-----BEGIN CERTIFICATE--\nAAAA\n");
    let err = check_pair(&cert, &key, now()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CertError::Pem { .. }), "{text}");
    assert!(
        text.contains("malformed section start line \"-----BEGIN CERTIFICATE--\""),
        "{text}"
    );
    assert!(!text.contains("[45, 45"), "{text}");
}

#[test]
fn half_written_key_names_the_key_file_and_its_marker() {
    let dir = Dir::new();
    let key = dir.key("full.key", Key::Ed25519);
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let text = fs::read_to_string(&key).unwrap();
    let half = dir.write("tls.key", &text[..text.len() / 2]);
    let err = check_pair(&cert, &half, now()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: missing \"-----END PRIVATE KEY-----\"",
            half.display()
        )),
        "{err}"
    );
}

#[test]
fn garbage_key_file_is_an_error_naming_it() {
    let dir = Dir::new();
    let key = dir.key("real.key", Key::Ed25519);
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let garbage = dir.write("tls.key", "not a key at all");
    let err = check_pair(&cert, &garbage, now()).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&garbage.display().to_string()),
        "{err}"
    );
}

#[test]
fn key_section_holding_garbage_is_an_unusable_key() {
    let dir = Dir::new();
    let key = dir.key("real.key", Key::Ed25519);
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let bad = dir.write(
        "tls.key",
        "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n",
    );
    let err = check_pair(&cert, &bad, now()).unwrap_err();
    assert!(matches!(err, CertError::BadKey { .. }), "{err}");
}

#[test]
fn empty_key_file_is_an_error() {
    let dir = Dir::new();
    let key = dir.key("real.key", Key::Ed25519);
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let empty = dir.write("tls.key", "");
    let err = check_pair(&cert, &empty, now()).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err}");
}

#[test]
fn missing_key_file_is_a_read_error_naming_it() {
    let dir = Dir::new();
    let key = dir.key("real.key", Key::Ed25519);
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let missing = dir.path("tls.key");
    let err = check_pair(&cert, &missing, now()).unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn two_keys_in_the_key_file_is_an_error() {
    let dir = Dir::new();
    let a = dir.key("a.key", Key::Ed25519);
    let b = dir.key("b.key", Key::Ed25519);
    let cert = dir.self_signed("tls.crt", &a, "example.com");
    let both = dir.concat("tls.key", &[&a, &b]);
    let err = check_pair(&cert, &both, now()).unwrap_err();
    assert!(
        matches!(err, CertError::SeveralKeys { count: 2, .. }),
        "{err}"
    );
}

#[test]
fn encrypted_key_is_reported_as_such() {
    let dir = Dir::new();
    let key = dir.key("plain.key", Key::EcPkcs8("P-256"));
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    dir.openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        "plain.key",
        "-v2",
        "aes-256-cbc",
        "-passout",
        "pass:x",
        "-out",
        "tls.key",
    ]);
    let err = check_pair(&cert, &dir.path("tls.key"), now()).unwrap_err();
    assert!(matches!(err, CertError::EncryptedKey { .. }), "{err}");
}

#[test]
fn expired_certificate_is_an_error_with_not_after() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::EcSec1("prime256v1"));
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let err = check_pair(&cert, &key, now() + 31 * DAY).unwrap_err();
    let CertError::Expired { not_after, .. } = &err else {
        panic!("expected Expired, got {err}");
    };
    let printed = dir.openssl_stdout(&["x509", "-in", "tls.crt", "-noout", "-enddate"]);
    let year = printed.rsplit(' ').nth(1).unwrap_or_default().to_string();
    assert!(not_after.contains(&year), "{not_after} vs {printed}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn not_yet_valid_certificate_is_an_error_with_not_before() {
    let dir = Dir::new();
    let key = dir.key("tls.key", Key::EcSec1("prime256v1"));
    let cert = dir.self_signed("tls.crt", &key, "example.com");
    let err = check_pair(&cert, &key, now() - DAY).unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");
    assert!(err.to_string().contains("notBefore"), "{err}");
}

struct Chain {
    dir: Dir,
    leaf: PathBuf,
    leaf_key: PathBuf,
    ca: PathBuf,
}

fn chain() -> Chain {
    let dir = Dir::new();
    let ca_key = dir.key("ca.key", Key::EcPkcs8("P-384"));
    let ca = dir.self_signed("ca.crt", &ca_key, "Test CA");
    let leaf_key = dir.key("leaf.key", Key::EcSec1("prime256v1"));
    let leaf = dir.issued("leaf.crt", &leaf_key, &ca, &ca_key);
    Chain {
        dir,
        leaf,
        leaf_key,
        ca,
    }
}

#[test]
fn chain_in_order_is_valid() {
    let c = chain();
    let full = c.dir.concat("tls.crt", &[&c.leaf, &c.ca]);
    let summary = check_pair(&full, &c.leaf_key, now()).expect("valid chain");
    assert_eq!(summary.chain_len, 2);
    assert_eq!(summary.serial, "1234");
    assert_eq!(summary.issuer, "CN=Test CA");
}

#[test]
fn reversed_chain_is_out_of_order() {
    let c = chain();
    let reversed = c.dir.concat("tls.crt", &[&c.ca, &c.leaf]);
    let err = check_pair(&reversed, &c.leaf_key, now()).unwrap_err();
    assert!(
        matches!(err, CertError::ChainOrder { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("out of order"), "{err}");
}

#[test]
fn chain_with_an_impostor_ca_of_the_same_name_is_broken() {
    let c = chain();
    let other_key = c.dir.key("other.key", Key::EcPkcs8("P-384"));
    let impostor = c.dir.self_signed("impostor.crt", &other_key, "Test CA");
    let full = c.dir.concat("tls.crt", &[&c.leaf, &impostor]);
    let err = check_pair(&full, &c.leaf_key, now()).unwrap_err();
    assert!(
        matches!(err, CertError::ChainSignature { index: 1, .. }),
        "{err}"
    );
}
