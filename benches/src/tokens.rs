//! Bearer-token verifications per second: RS256, ES256 and EdDSA through
//! `meridian_auth::Verifier` (header, allow-list, key lookup, signature by
//! jsonwebtoken on ring, time/issuer/audience checks, claim mapping), each
//! beside its baseline — ring's bare signature check of the same token,
//! what the cryptography alone costs.
//!
//! The keys: a fixed 2048-bit RSA key (tokens/rsa-2048.pk8, a benchmark
//! fixture), and fresh P-256 and Ed25519 keys. One thread; the median of
//! the rounds is reported.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark: fail loudly.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use meridian_auth::{
    Algorithm, Claims, JwksSource, Role, SigningKey, Verifier, VerifierSettings, jwks::write_jwks,
};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey},
};
use serde_json::json;

use crate::{
    Sizes,
    progress::Progress,
    report::{Row, ScenarioReport},
};

const RSA_PKCS8: &[u8] = include_bytes!("tokens/rsa-2048.pk8");
const ISSUER: &str = "https://idp.bench";

/// ring's bare signature check: (signed bytes, signature) → valid.
type BareCheck = Box<dyn Fn(&[u8], &[u8]) -> bool + Send>;

/// One algorithm's token and the bare check of its signature.
struct Case {
    alg: &'static str,
    token: String,
    bare: BareCheck,
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (per_round, rounds) = if sizes.smoke {
        (200, 1)
    } else {
        (20_000, sizes.rounds as usize + 2)
    };
    let mut report = ScenarioReport::new(
        "tokens",
        format!(
            "one thread; {per_round} verifications of one token per round, {rounds} rounds, median; \
             RSA 2048, P-256, Ed25519; allow-list RS256, ES256, EdDSA"
        ),
    );
    progress.say("minting");
    let dir = tempfile::tempdir()?;
    let (cases, jwks) = cases()?;
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &jwks)?;
    let source = Arc::new(JwksSource::load_with(
        &path,
        &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
    )?);
    let settings = VerifierSettings {
        issuer: Some(ISSUER.into()),
        audience: Some("meridian".into()),
    };
    let verifier = Verifier::new(source, settings, Arc::new(meridian_store::SystemClock));

    let mut slowest = f64::INFINITY;
    for case in cases {
        progress.say(case.alg);
        let (verifier, token) = (verifier.clone(), case.token.clone());
        anyhow::ensure!(
            verifier.verify(&token).is_ok(),
            "{}: the token does not verify",
            case.alg
        );
        let full = tokio::task::spawn_blocking(move || {
            median(rounds, || {
                for _ in 0..per_round {
                    black_box(verifier.verify(black_box(&token)).is_ok());
                }
            })
        })
        .await?;
        let token = case.token.clone();
        let bare = case.bare;
        let baseline = tokio::task::spawn_blocking(move || {
            let (signed, signature) = token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            median(rounds, || {
                for _ in 0..per_round {
                    black_box(bare(black_box(signed.as_bytes()), &signature));
                }
            })
        })
        .await?;
        let per_second = |seconds: f64| per_round as f64 / seconds;
        let base = report.row(
            Row::new(
                format!("{}: ring signature check alone", case.alg),
                per_second(baseline),
                "checks/s",
            )
            .baseline(),
        );
        report.row(
            Row::new(
                format!("{}: Verifier::verify", case.alg),
                per_second(full),
                "verifications/s",
            )
            .against(&base),
        );
        slowest = slowest.min(per_second(full));
    }
    // No figure in the issue: a verification must cost far less than the
    // call it guards (a durable write is ~1 ms), so 5,000/s on one thread.
    report.target(
        "slowest algorithm, verifications/s on one thread",
        5_000.0,
        slowest,
        "verifications/s",
        true,
    );
    Ok(report)
}

/// The median duration (seconds) of `rounds` runs of `f`, after one warm-up.
fn median(rounds: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn cases() -> anyhow::Result<(Vec<Case>, Vec<serde_json::Value>)> {
    let rng = SystemRandom::new();
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let claims = Claims::new("bench", Role::Sre, None, now, 3600)
        .with_issuer(ISSUER)
        .with_audience("meridian");
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    let signing_input = |alg: &str, kid: &str| {
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string());
        format!("{header}.{payload}")
    };
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);

    let rsa = RsaKeyPair::from_pkcs8(RSA_PKCS8).map_err(|e| anyhow::anyhow!("RSA key: {e}"))?;
    let input = signing_input("RS256", "rsa-1");
    let mut sig = vec![0; rsa.public().modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &rng,
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rsa_public = rsa.public_key().as_ref().to_vec();
    let components = signature::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public());
    let rsa_jwk = json!({"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64(&components.n), "e": b64(&components.e)});
    let rs256 = Case {
        alg: "RS256",
        token: format!("{input}.{}", b64(&sig)),
        bare: Box::new(move |msg, sig| {
            UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &rsa_public)
                .verify(msg, sig)
                .is_ok()
        }),
    };

    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ec = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let input = signing_input("ES256", "ec-1");
    let sig = ec
        .sign(&rng, input.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let point = ec.public_key().as_ref().to_vec();
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let es256 = Case {
        alg: "ES256",
        token: format!("{input}.{}", b64(sig.as_ref())),
        bare: Box::new(move |msg, sig| {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                .verify(msg, sig)
                .is_ok()
        }),
    };

    let ed = SigningKey::generate("ed-1")?;
    let ed_jwk = ed.public_jwk();
    let ed_x = URL_SAFE_NO_PAD.decode(ed_jwk["x"].as_str().unwrap_or_default())?;
    let eddsa = Case {
        alg: "EdDSA",
        token: ed.mint(&claims),
        bare: Box::new(move |msg, sig| {
            UnparsedPublicKey::new(&signature::ED25519, &ed_x)
                .verify(msg, sig)
                .is_ok()
        }),
    };
    Ok((vec![rs256, es256, eddsa], vec![rsa_jwk, ec_jwk, ed_jwk]))
}
