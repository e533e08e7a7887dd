//! HMAC-SHA256 signatures shared by the webhook channel (both directions) and web chat session tokens.
//!
//! A webhook request is signed over the decimal Unix timestamp immediately followed by the raw body
//! bytes (`timestamp + body`), sent as `X-Frontdesk-Timestamp: <secs>` and
//! `X-Frontdesk-Signature: sha256=<lowercase hex>`. Comparison is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signing time in seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "x-frontdesk-timestamp";
/// Header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-frontdesk-signature";

/// Why a signed request was refused. The messages are returned to the caller as they are.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing header X-Frontdesk-Timestamp")]
    MissingTimestamp,
    #[error("header X-Frontdesk-Timestamp must be the Unix time in seconds")]
    BadTimestamp,
    #[error("timestamp is {0} s away from the server's clock (at most {1} s allowed): stale or replayed request")]
    Stale(i64, i64),
    #[error("missing header X-Frontdesk-Signature")]
    MissingSignature,
    #[error("header X-Frontdesk-Signature must be 'sha256=' followed by 64 hex digits")]
    BadSignatureFormat,
    #[error(
        "signature does not match: HMAC-SHA256 over timestamp + body with the channel's secret"
    )]
    Mismatch,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any size")
}

/// Raw HMAC-SHA256 of the concatenated parts.
pub fn hmac_parts(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = mac(secret);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Constant-time check of a raw HMAC-SHA256 over the concatenated parts.
pub fn verify_parts(secret: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    let mut m = mac(secret);
    for p in parts {
        m.update(p);
    }
    m.verify_slice(expected).is_ok()
}

/// The `X-Frontdesk-Signature` value for a body sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "sha256={}",
        hex::encode(hmac_parts(secret, &[ts.as_bytes(), body]))
    )
}

/// Checks the two headers of a signed request against its raw body.
pub fn verify(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_secs: i64,
    max_skew_secs: i64,
) -> Result<(), SignatureError> {
    let ts_raw = timestamp_header
        .ok_or(SignatureError::MissingTimestamp)?
        .trim();
    let ts: i64 = ts_raw.parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = (now_secs - ts).abs();
    if skew > max_skew_secs {
        return Err(SignatureError::Stale(skew, max_skew_secs));
    }
    let sig = signature_header
        .ok_or(SignatureError::MissingSignature)?
        .trim();
    let hex_part = sig
        .strip_prefix("sha256=")
        .ok_or(SignatureError::BadSignatureFormat)?;
    let raw = hex::decode(hex_part).map_err(|_| SignatureError::BadSignatureFormat)?;
    if raw.len() != 32 {
        return Err(SignatureError::BadSignatureFormat);
    }
    if verify_parts(secret, &[ts_raw.as_bytes(), body], &raw) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_body_verifies_and_tampering_is_caught() {
        let sig = sign(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        let ok = verify(
            b"s3cret",
            Some("1700000000"),
            Some(&sig),
            b"{\"a\":1}",
            1_700_000_010,
            300,
        );
        assert_eq!(ok, Ok(()));
        let tampered = verify(
            b"s3cret",
            Some("1700000000"),
            Some(&sig),
            b"{\"a\":2}",
            1_700_000_010,
            300,
        );
        assert_eq!(tampered, Err(SignatureError::Mismatch));
        let wrong_key = verify(
            b"other",
            Some("1700000000"),
            Some(&sig),
            b"{\"a\":1}",
            1_700_000_010,
            300,
        );
        assert_eq!(wrong_key, Err(SignatureError::Mismatch));
    }

    #[test]
    fn stale_and_malformed_headers_are_refused() {
        let sig = sign(b"k", 1000, b"x");
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), b"x", 2000, 300),
            Err(SignatureError::Stale(1000, 300))
        );
        assert_eq!(
            verify(b"k", None, Some(&sig), b"x", 1000, 300),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            verify(b"k", Some("soon"), Some(&sig), b"x", 1000, 300),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"k", Some("1000"), None, b"x", 1000, 300),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            verify(b"k", Some("1000"), Some("md5=00"), b"x", 1000, 300),
            Err(SignatureError::BadSignatureFormat)
        );
        assert_eq!(
            verify(b"k", Some("1000"), Some("sha256=zz"), b"x", 1000, 300),
            Err(SignatureError::BadSignatureFormat)
        );
    }
}
