//! Small values the report writes: the Content-Security-Policy hashes, the MIME type of a
//! picture. (Times and durations are written by [`crate::time`].)

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::markup::Escaped;

/// A Content-Security-Policy source allowing exactly this inline script or style.
pub fn csp_hash(source: &str) -> Escaped {
    Escaped::text(&format!(
        "sha256-{}",
        BASE64.encode(Sha256::digest(source.as_bytes()))
    ))
}

/// The MIME type of an encoded picture, from its first bytes (JPEG unless it is clearly PNG
/// or WebP).
pub fn image_mime(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_hashes_are_base64_sha256() {
        // sha256 of the empty string, a known value.
        assert_eq!(
            csp_hash("").as_str(),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn mime_types() {
        assert_eq!(image_mime(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(image_mime(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(image_mime(b"\xff\xd8\xff"), "image/jpeg");
    }
}
