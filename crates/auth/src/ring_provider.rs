//! `jsonwebtoken`'s signature checks done by `ring`, the crypto library the
//! workspace already builds for rustls: its RustCrypto and aws-lc backends
//! would each add a second crypto stack to compile. This is glue only —
//! every primitive is ring's — and it verifies; Meridian signs its own
//! development tokens with [`crate::SigningKey`].

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind,
    crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils},
    errors::{Error, ErrorKind},
    signature,
};
use ring::signature::{
    self as sig, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};

/// The provider: verification of the RSA, ECDSA and EdDSA algorithms.
/// HMAC is not offered: a shared secret is not a public key, and the
/// allow-list ([`crate::Algorithms`]) cannot name it either.
pub(crate) static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes ring the process's provider for `jsonwebtoken`; a provider that
/// is already installed (or chosen by a crate feature elsewhere) stays.
pub(crate) fn install() {
    if CryptoProvider::try_get_default().is_none() {
        let _ = RING_PROVIDER.install_default();
    }
}

fn no_signer(_: &Algorithm, _: &jsonwebtoken::EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::Signing("meridian-auth verifies tokens only".into()).into())
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let (family, check): (AlgorithmFamily, Check) = match algorithm {
        Algorithm::RS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        ),
        Algorithm::RS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        ),
        Algorithm::RS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        ),
        Algorithm::PS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        ),
        Algorithm::PS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        ),
        Algorithm::PS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        ),
        Algorithm::ES256 => (
            AlgorithmFamily::Ec,
            Check::Raw(&sig::ECDSA_P256_SHA256_FIXED),
        ),
        Algorithm::ES384 => (
            AlgorithmFamily::Ec,
            Check::Raw(&sig::ECDSA_P384_SHA384_FIXED),
        ),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, Check::Raw(&sig::ED25519)),
        // HMAC, and whatever a later jsonwebtoken adds.
        _ => {
            return Err(ErrorKind::UnsupportedAlgorithm.into());
        }
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        check,
        key: key.clone(),
    }))
}

#[derive(Clone, Copy)]
enum Check {
    /// RSA from the JWK's `n` and `e`.
    Rsa(&'static sig::RsaParameters),
    /// A key ring takes as bytes: an uncompressed EC point or an Ed25519 `x`.
    Raw(&'static dyn VerificationAlgorithm),
}

struct RingVerifier {
    algorithm: Algorithm,
    check: Check,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match (self.check, self.key.kind()) {
            (Check::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            (Check::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(params, der).verify(msg, signature)
            }
            (Check::Raw(algorithm), DecodingKeyKind::SecretOrDer(bytes)) => {
                UnparsedPublicKey::new(algorithm, bytes).verify(msg, signature)
            }
            (Check::Raw(_), DecodingKeyKind::RsaModulusExponent { .. }) => {
                return Err(signature::Error::new());
            }
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}
