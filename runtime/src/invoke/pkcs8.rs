//! Encrypted PKCS#8 private keys (`-----BEGIN ENCRYPTED PRIVATE KEY-----`)
//! for `transport.client_key_password`: the PBES2 scheme of PKCS#5 v2.1
//! (RFC 8018) with PBKDF2 (HMAC-SHA1, -SHA256, -SHA384 or -SHA512) and
//! AES-128, -192 or -256 in CBC mode, which covers what OpenSSL writes
//! (`openssl pkcs8 -topk8 -v2 aes-256-cbc`, its default). Decryption is
//! aws-lc-rs's; the DER structure around it is read here, every length
//! checked against the bytes that are there.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::pbkdf2;
use base64::Engine as _;

const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

const PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const HMAC_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02];
const AES_CBC_PREFIX: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01];

/// More PBKDF2 iterations than this are refused: a damaged file must not keep the start busy for hours.
const MAX_ITERATIONS: u32 = 10_000_000;

/// Whether a PEM text holds an encrypted private key.
pub fn is_encrypted(pem: &str) -> bool {
    pem.contains(BEGIN)
}

/// The PKCS#8 DER of the encrypted private key in `pem`, decrypted with `password`.
pub fn decrypt_pem(pem: &str, password: &str) -> Result<Vec<u8>, String> {
    let start = pem.find(BEGIN).ok_or("holds no ENCRYPTED PRIVATE KEY section")? + BEGIN.len();
    let end = pem[start..].find(END).ok_or("the ENCRYPTED PRIVATE KEY section has no END line")? + start;
    let base64: String = pem[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| format!("the ENCRYPTED PRIVATE KEY section is not base64: {e}"))?;
    decrypt_der(&der, password)
}

/// The parameters of one PBES2 encryption.
struct Pbes2<'a> {
    salt: &'a [u8],
    iterations: NonZeroU32,
    prf: pbkdf2::Algorithm,
    cipher: &'static aws_lc_rs::cipher::Algorithm,
    key_len: usize,
    iv: [u8; 16],
    encrypted: &'a [u8],
}

fn decrypt_der(der: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let scheme = parse(der).map_err(|e| format!("not an encrypted PKCS#8 key this runtime reads: {e}"))?;
    let mut key = vec![0; scheme.key_len];
    pbkdf2::derive(scheme.prf, scheme.iterations, scheme.salt, password.as_bytes(), &mut key);
    let wrong = || "the password does not decrypt the key (or the key is damaged)".to_owned();
    let key = UnboundCipherKey::new(scheme.cipher, &key).map_err(|_| wrong())?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| wrong())?;
    let mut data = scheme.encrypted.to_vec();
    let plain = key.decrypt(&mut data, DecryptionContext::Iv128(FixedLength::from(scheme.iv))).map_err(|_| wrong())?;
    // A PKCS#8 key is a DER SEQUENCE: anything else came from a wrong password whose padding happened to fit.
    if plain.first() != Some(&0x30) {
        return Err(wrong());
    }
    Ok(plain.to_vec())
}

/// Reads `EncryptedPrivateKeyInfo` with PBES2 parameters (RFC 5958, RFC 8018).
fn parse(der: &[u8]) -> Result<Pbes2<'_>, String> {
    let mut outer = Der(der).sequence()?;
    let mut algorithm = outer.sequence()?;
    if algorithm.oid()? != PBES2 {
        return Err("the encryption is not PBES2 (PKCS#5 v1 schemes are not read; convert with `openssl pkcs8 \
                    -topk8 -v2 aes-256-cbc`)"
            .into());
    }
    let mut params = algorithm.sequence()?;
    let mut kdf = params.sequence()?;
    if kdf.oid()? != PBKDF2 {
        return Err("the key derivation is not PBKDF2".into());
    }
    let mut kdf_params = kdf.sequence()?;
    let salt = kdf_params.take(0x04)?;
    let iterations = kdf_params.integer()?;
    let iterations = NonZeroU32::new(iterations)
        .filter(|n| n.get() <= MAX_ITERATIONS)
        .ok_or_else(|| format!("{iterations} PBKDF2 iterations (1 to {MAX_ITERATIONS} are read)"))?;
    let mut stated_key_len = None;
    if kdf_params.peek() == Some(0x02) {
        stated_key_len = Some(kdf_params.integer()? as usize);
    }
    let prf = if kdf_params.0.is_empty() {
        pbkdf2::PBKDF2_HMAC_SHA1
    } else {
        let mut prf = kdf_params.sequence()?;
        match prf.oid()?.strip_prefix(HMAC_PREFIX) {
            Some([0x07]) => pbkdf2::PBKDF2_HMAC_SHA1,
            Some([0x09]) => pbkdf2::PBKDF2_HMAC_SHA256,
            Some([0x0a]) => pbkdf2::PBKDF2_HMAC_SHA384,
            Some([0x0b]) => pbkdf2::PBKDF2_HMAC_SHA512,
            _ => return Err("the PBKDF2 PRF is not HMAC-SHA1, -SHA256, -SHA384 or -SHA512".into()),
        }
    };
    let mut encryption = params.sequence()?;
    let (cipher, key_len) = match encryption.oid()?.strip_prefix(AES_CBC_PREFIX) {
        Some([0x02]) => (&AES_128, 16),
        Some([0x16]) => (&AES_192, 24),
        Some([0x2a]) => (&AES_256, 32),
        _ => return Err("the cipher is not AES-128, -192 or -256 in CBC mode".into()),
    };
    if stated_key_len.is_some_and(|stated| stated != key_len) {
        return Err("the PBKDF2 key length does not match the cipher".into());
    }
    let iv: [u8; 16] = encryption.take(0x04)?.try_into().map_err(|_| "the AES-CBC IV is not 16 bytes")?;
    let encrypted = outer.take(0x04)?;
    Ok(Pbes2 { salt, iterations, prf, cipher, key_len, iv, encrypted })
}

/// The unread part of a DER value.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The contents of the next value, which must have `tag`.
    fn take(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let truncated = || "the DER structure is cut short".to_owned();
        let (&found, rest) = self.0.split_first().ok_or_else(truncated)?;
        if found != tag {
            return Err(format!("expected DER tag {tag:#04x}, found {found:#04x}"));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return Err("a DER length is not in the definite form of at most 4 bytes".into());
            }
            let (bytes, after) = rest.split_at_checked(count).ok_or_else(truncated)?;
            rest = after;
            bytes.iter().fold(0usize, |length, byte| (length << 8) | usize::from(*byte))
        };
        let (value, after) = rest.split_at_checked(length).ok_or_else(truncated)?;
        self.0 = after;
        Ok(value)
    }

    fn sequence(&mut self) -> Result<Der<'a>, String> {
        self.take(0x30).map(Der)
    }

    fn oid(&mut self) -> Result<&'a [u8], String> {
        self.take(0x06)
    }

    /// A non-negative INTEGER that fits 32 bits.
    fn integer(&mut self) -> Result<u32, String> {
        let bytes = self.take(0x02)?;
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            return Err("a DER INTEGER is negative".into());
        }
        // A leading zero byte only keeps the next byte's high bit from reading as a sign.
        let bytes = bytes.strip_prefix(&[0]).unwrap_or(bytes);
        if bytes.len() > 4 {
            return Err("a DER INTEGER is larger than 32 bits".into());
        }
        Ok(bytes.iter().fold(0u32, |n, byte| (n << 8) | u32::from(*byte)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_structures_are_errors_never_panics() {
        for der in [&[][..], &[0x30], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], &[0x30, 0x02, 0x06], &[0x04, 0x00]] {
            assert!(decrypt_der(der, "pw").is_err(), "{der:?}");
        }
        let error = decrypt_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\n!!\n-----END ENCRYPTED PRIVATE KEY-----", "")
            .expect_err("not base64");
        assert!(error.contains("not base64"), "{error}");
    }
}
