//! Does a private key belong to a certificate? Both sides are reduced to a
//! [`PublicKey`] and compared.
//!
//! The private side is loaded with *ring*, which also checks the key's own
//! consistency (an RSA key's primes against its modulus, an EC key's embedded public
//! point against its scalar), so a corrupted key is caught here rather than by the
//! proxy. *ring* reads PKCS#8 and PKCS#1; a SEC1 EC key is wrapped in a PKCS#8
//! envelope first.
//!
//! **Boundary:** what *ring* accepts is what is supported: RSA 2048–8192 bits, ECDSA
//! P-256 and P-384, Ed25519. Anything else is reported as an unusable key, never as
//! a match.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
};
use rustls_pki_types::PrivateKeyDer;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::public_key::PublicKey as ParsedKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// A public key in a form where equal keys compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// ECDSA: the curve and the uncompressed point.
    Ec {
        /// The curve.
        curve: Curve,
        /// The SEC1 uncompressed point.
        point: Vec<u8>,
    },
    /// Ed25519: the 32-byte public key.
    Ed25519(Vec<u8>),
}

/// The elliptic curves that can be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (prime256v1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

/// The kind of key of a pair, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with a modulus of this many bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on this curve.
    Ecdsa(Curve),
    /// Ed25519.
    Ed25519,
}

impl PublicKey {
    /// The kind of this key.
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa { n, .. } => KeyKind::Rsa { bits: bit_len(n) },
            PublicKey::Ec { curve, .. } => KeyKind::Ecdsa(*curve),
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyKind::Ecdsa(Curve::P256) => f.write_str("ECDSA P-256"),
            KeyKind::Ecdsa(Curve::P384) => f.write_str("ECDSA P-384"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// The public half of a private key. The error says why the key is unusable.
pub fn public_of_private(key: &PrivateKeyDer<'_>) -> Result<PublicKey, String> {
    match key {
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())
            .map(|pair| rsa_public(&pair))
            .map_err(|e| format!("RSA key rejected: {e}")),
        PrivateKeyDer::Sec1(der) => ec_from_sec1(der.secret_sec1_der()),
        PrivateKeyDer::Pkcs8(der) => from_pkcs8(der.secret_pkcs8_der()),
        _ => Err("unknown private key encoding".to_string()),
    }
}

/// The public key of a certificate. The error says why it cannot be checked.
pub fn public_of_certificate(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, String> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(ParsedKey::RSA(rsa)) => Ok(PublicKey::Rsa {
                n: strip_zeros(rsa.modulus),
                e: strip_zeros(rsa.exponent),
            }),
            Ok(_) => Err("RSA key of an unexpected shape".to_string()),
            Err(e) => Err(format!("RSA key cannot be parsed: {e}")),
        }
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let curve = match curve {
            Some(oid) if oid == OID_EC_P256 => Curve::P256,
            Some(oid) if oid == OID_NIST_EC_P384 => Curve::P384,
            Some(oid) => return Err(format!("elliptic curve {oid} is not supported")),
            None => return Err("elliptic curve not named".to_string()),
        };
        Ok(PublicKey::Ec {
            curve,
            point: spki.subject_public_key.data.to_vec(),
        })
    } else if *alg == OID_SIG_ED25519 {
        Ok(PublicKey::Ed25519(spki.subject_public_key.data.to_vec()))
    } else {
        Err(format!("key algorithm {alg} is not supported"))
    }
}

fn from_pkcs8(der: &[u8]) -> Result<PublicKey, String> {
    // PKCS#8 names its algorithm inside; rather than parse it twice, let each loader
    // try: a wrong-algorithm rejection is immediate.
    if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
        return Ok(rsa_public(&pair));
    }
    let rng = SystemRandom::new();
    for (curve, alg) in CURVES {
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(alg, der, &rng) {
            return Ok(PublicKey::Ec {
                curve,
                point: pair.public_key().as_ref().to_vec(),
            });
        }
    }
    match Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        Ok(pair) => Ok(PublicKey::Ed25519(pair.public_key().as_ref().to_vec())),
        Err(_) => Err(
            "PKCS#8 key is not RSA (2048-8192 bits), ECDSA P-256/P-384 or Ed25519, or is inconsistent"
                .to_string(),
        ),
    }
}

const CURVES: [(Curve, &signature::EcdsaSigningAlgorithm); 2] = [
    (Curve::P256, &signature::ECDSA_P256_SHA256_ASN1_SIGNING),
    (Curve::P384, &signature::ECDSA_P384_SHA384_ASN1_SIGNING),
];

fn ec_from_sec1(sec1: &[u8]) -> Result<PublicKey, String> {
    let rng = SystemRandom::new();
    for (curve, alg) in CURVES {
        let pkcs8 = wrap_sec1(curve, sec1);
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng) {
            return Ok(PublicKey::Ec {
                curve,
                point: pair.public_key().as_ref().to_vec(),
            });
        }
    }
    Err("EC key is not on P-256 or P-384, lacks its public key, or is inconsistent".to_string())
}

/// `PrivateKeyInfo { version 0, AlgorithmIdentifier { id-ecPublicKey, curve }, OCTET
/// STRING { sec1 } }` (RFC 5208, RFC 5915), which is all *ring* needs.
fn wrap_sec1(curve: Curve, sec1: &[u8]) -> Vec<u8> {
    const VERSION_0: &[u8] = &[0x02, 0x01, 0x00];
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let curve = match curve {
        Curve::P256 => P256,
        Curve::P384 => P384,
    };
    let algorithm = tlv(0x30, &[EC_PUBLIC_KEY, curve].concat());
    let key = tlv(0x04, sec1);
    tlv(0x30, &[VERSION_0, &algorithm, &key].concat())
}

/// One DER tag-length-value.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

fn rsa_public(pair: &RsaKeyPair) -> PublicKey {
    let parts: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    PublicKey::Rsa {
        n: strip_zeros(&parts.n),
        e: strip_zeros(&parts.e),
    }
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        Some(&top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_uses_long_form_lengths_from_128_bytes() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 0x02, 1, 2]);
        let long = tlv(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(0x04, &[0; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn bit_length_counts_from_the_top_set_bit() {
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(&[0x01, 0]), 9);
        assert_eq!(bit_len(&[]), 0);
    }
}
