//! DSSE envelopes (Dead Simple Signing Envelope, v1.0): what provenance and
//! signatures are wrapped in.
//!
//! A signature covers `PAE(payloadType, payload)` =
//! `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII
//! decimal, so the payload is never parsed before it is verified.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::{PublicKey, SigningKey};
use crate::error::Error;

/// The media type of an envelope stored as an artifact's content.
pub const MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 (standard, padded) of the payload bytes.
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the Ed25519 signature of the PAE.
    pub sig: String,
}

/// The pre-authentication encoding every signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Why an envelope did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not one signature is by any of the keys asked about.
    NoSignatureByKey,
    /// A signature names one of the keys but does not verify: the payload,
    /// its type or the signature was changed.
    BadSignature { keyid: String },
    /// The envelope does not parse.
    Malformed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoSignatureByKey => write!(f, "not signed by a trusted key"),
            Failure::BadSignature { keyid } => write!(
                f,
                "the signature by key {} does not verify (the content or the signature was changed)",
                &keyid[..keyid.len().min(12)]
            ),
            Failure::Malformed(why) => write!(f, "malformed envelope: {why}"),
        }
    }
}

impl Envelope {
    /// Sign `payload` as `payload_type` with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
        Envelope {
            payload: B64.encode(payload),
            payload_type: payload_type.into(),
            signatures: vec![Signature {
                keyid: key.keyid(),
                sig: B64.encode(key.sign(&pae(payload_type, payload))),
            }],
        }
    }

    pub fn parse(bytes: &[u8]) -> std::result::Result<Envelope, Failure> {
        serde_json::from_slice(bytes).map_err(|e| Failure::Malformed(e.to_string()))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serializes")
    }

    /// The payload bytes, unverified.
    pub fn payload_bytes(&self) -> std::result::Result<Vec<u8>, Failure> {
        B64.decode(&self.payload)
            .map_err(|e| Failure::Malformed(format!("payload is not base64: {e}")))
    }

    /// Verify against `keys`: the first key (of those given) with a valid
    /// signature, and the payload it covers. A signature by one of the keys
    /// that fails is reported as tampering, even if another one verifies,
    /// since the envelope was then altered after signing.
    pub fn verify(&self, keys: &[PublicKey]) -> std::result::Result<(PublicKey, Vec<u8>), Failure> {
        let payload = self.payload_bytes()?;
        let message = pae(&self.payload_type, &payload);
        let mut good = None;
        for s in &self.signatures {
            let Some(key) = keys.iter().find(|k| k.keyid() == s.keyid) else {
                continue;
            };
            let ok = B64
                .decode(&s.sig)
                .is_ok_and(|sig| key.verify(&message, &sig));
            if !ok {
                return Err(Failure::BadSignature {
                    keyid: s.keyid.clone(),
                });
            }
            good.get_or_insert(*key);
        }
        good.map(|k| (k, payload)).ok_or(Failure::NoSignatureByKey)
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::corrupt("DSSE envelope", f.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_spec_example() {
        // From the DSSE v1.0 protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn verify_and_tamper() {
        let k = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let env = Envelope::sign("application/x-test", b"{\"a\":1}", &k);
        let parsed = Envelope::parse(&env.to_bytes()).unwrap();
        let (who, payload) = parsed.verify(&[other.public(), k.public()]).unwrap();
        assert_eq!((who, payload.as_slice()), (k.public(), &b"{\"a\":1}"[..]));
        assert_eq!(
            parsed.verify(&[other.public()]),
            Err(Failure::NoSignatureByKey)
        );

        let mut t = parsed.clone();
        t.payload = B64.encode(b"{\"a\":2}");
        assert!(matches!(
            t.verify(&[k.public()]),
            Err(Failure::BadSignature { .. })
        ));
        let mut t = parsed.clone();
        t.payload_type = "application/x-other".into();
        assert!(matches!(
            t.verify(&[k.public()]),
            Err(Failure::BadSignature { .. })
        ));
        let mut t = parsed;
        t.signatures[0].sig = B64.encode([0u8; 64]);
        assert!(matches!(
            t.verify(&[k.public()]),
            Err(Failure::BadSignature { .. })
        ));
    }
}
