//! Tokens and key sets without a server: what the verifier accepts and
//! refuses, claim by claim, and how the JWKS file reloads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

use std::sync::Arc;

use meridian_auth::{
    AuthError, Claims, JwksSource, Principal, Role, SigningKey, Verifier, VerifierSettings,
    jwks::write_jwks,
};
use meridian_core::{ManualClock, RegionId};

const NOW: i64 = 1_780_000_000;

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    key: SigningKey,
    verifier: Verifier,
}

fn setup(settings: VerifierSettings) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let key = SigningKey::generate("k1").unwrap();
    write_jwks(&path, &[key.public_jwk()]).unwrap();
    let source = Arc::new(JwksSource::load(&path).unwrap());
    let clock = Arc::new(ManualClock::new(jiff::Timestamp::from_second(NOW).unwrap()));
    Setup {
        _dir: dir,
        path,
        key,
        verifier: Verifier::new(source, settings, clock),
    }
}

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

#[test]
fn a_good_token_gives_its_principal() {
    let s = setup(VerifierSettings::default());
    let token = s.key.mint(&Claims::new(
        "ana",
        Role::Agent,
        Some(&region("eu-west")),
        NOW,
        60,
    ));
    let principal = s.verifier.verify(&token).unwrap();
    assert_eq!(
        principal,
        Principal {
            subject: "ana".into(),
            role: Role::Agent,
            region: Some(region("eu-west"))
        }
    );
    assert_eq!(principal.agent_region(), Some(&region("eu-west")));
    let sre = s
        .verifier
        .verify(&s.key.mint(&Claims::new("sam", Role::Sre, None, NOW, 60)))
        .unwrap();
    assert_eq!(
        sre.agent_region(),
        None,
        "only agents are bound to a region"
    );
}

#[test]
fn expiry_and_not_before_allow_thirty_seconds_of_skew() {
    let s = setup(VerifierSettings::default());
    let expired_within_leeway = s
        .key
        .mint(&Claims::new("a", Role::Sre, None, NOW - 100, 80));
    assert!(s.verifier.verify(&expired_within_leeway).is_ok());
    let expired = s
        .key
        .mint(&Claims::new("a", Role::Sre, None, NOW - 100, 60));
    assert!(matches!(
        s.verifier.verify(&expired),
        Err(AuthError::Expired { .. })
    ));
    let mut early = Claims::new("a", Role::Sre, None, NOW, 60);
    early.nbf = Some(NOW + 31);
    assert!(matches!(
        s.verifier.verify(&s.key.mint(&early)),
        Err(AuthError::NotYetValid { .. })
    ));
    early.nbf = Some(NOW + 29);
    assert!(s.verifier.verify(&s.key.mint(&early)).is_ok());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let settings = VerifierSettings {
        issuer: Some("https://idp".into()),
        audience: Some("meridian".into()),
    };
    let s = setup(settings);
    let good = Claims::new("a", Role::Admin, None, NOW, 60)
        .with_issuer("https://idp")
        .with_audience("meridian");
    assert!(s.verifier.verify(&s.key.mint(&good)).is_ok());
    let mut many = good.clone();
    many.aud = Some(serde_json::json!(["other", "meridian"]));
    assert!(
        s.verifier.verify(&s.key.mint(&many)).is_ok(),
        "aud may be an array"
    );
    let wrong_iss = Claims::new("a", Role::Admin, None, NOW, 60)
        .with_issuer("https://evil")
        .with_audience("meridian");
    assert!(matches!(
        s.verifier.verify(&s.key.mint(&wrong_iss)),
        Err(AuthError::Issuer { .. })
    ));
    let no_aud = Claims::new("a", Role::Admin, None, NOW, 60).with_issuer("https://idp");
    assert!(matches!(
        s.verifier.verify(&s.key.mint(&no_aud)),
        Err(AuthError::Audience { .. })
    ));
}

#[test]
fn bad_claims_are_refused() {
    let s = setup(VerifierSettings::default());
    let mut claims = Claims::new("a", Role::Agent, None, NOW, 60);
    let err = s
        .verifier
        .verify(&s.key.mint(&claims))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "token claims: an agent token needs a region claim");
    claims.role = "root".into();
    let err = s
        .verifier
        .verify(&s.key.mint(&claims))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("role \"root\" is not one of agent, operator, sre, admin"),
        "{err}"
    );
    claims.role = "sre".into();
    claims.region = Some("Not A Region".into());
    assert!(matches!(
        s.verifier.verify(&s.key.mint(&claims)),
        Err(AuthError::Claim(_))
    ));
}

#[test]
fn malformed_tokens_never_panic_and_are_refused() {
    let s = setup(VerifierSettings::default());
    let good = s.key.mint(&Claims::new("a", Role::Sre, None, NOW, 60));
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "a.b.c.d".into(),
        "%%%.%%%.%%%".into(),
        format!("{good}x"),
        good.replace('.', ""),
        "x".repeat(100_000),
    ];
    for token in cases {
        assert!(s.verifier.verify(&token).is_err(), "{token:.40}");
    }
}

#[test]
fn private_keys_round_trip_and_sign_the_same() {
    let key = SigningKey::generate("k9").unwrap();
    let again = SigningKey::from_private_jwk(&key.to_private_jwk()).unwrap();
    assert_eq!(again.kid(), "k9");
    assert_eq!(again.public_jwk(), key.public_jwk());
    let claims = Claims::new("a", Role::Sre, None, NOW, 60);
    assert_eq!(
        again.mint(&claims),
        key.mint(&claims),
        "Ed25519 signatures are deterministic"
    );
}

#[test]
fn the_jwks_reloads_on_change_and_keeps_its_keys_on_a_bad_file() {
    let s = setup(VerifierSettings::default());
    let source = s.verifier.keys().clone();
    assert_eq!(source.current().kids(), ["k1"]);
    assert!(!source.reload(), "unchanged file: nothing to do");

    let k2 = SigningKey::generate("k2").unwrap();
    write_jwks(&s.path, &[s.key.public_jwk(), k2.public_jwk()]).unwrap();
    assert!(source.reload());
    assert_eq!(source.current().kids(), ["k1", "k2"]);

    std::fs::write(
        &s.path,
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k3","x":"short"}]}"#,
    )
    .unwrap();
    assert!(!source.reload());
    assert_eq!(
        source.current().kids(),
        ["k1", "k2"],
        "a refused file leaves the keys in force"
    );

    write_jwks(&s.path, &[k2.public_jwk()]).unwrap();
    assert!(source.reload());
    let old = s.key.mint(&Claims::new("a", Role::Sre, None, NOW, 60));
    assert!(matches!(s.verifier.verify(&old), Err(AuthError::UnknownKey(kid)) if kid == "k1"));
}

#[test]
fn an_unknown_kid_rereads_the_file_at_once() {
    let s = setup(VerifierSettings::default());
    let k2 = SigningKey::generate("k2").unwrap();
    write_jwks(&s.path, &[k2.public_jwk()]).unwrap();
    let token = k2.mint(&Claims::new("a", Role::Sre, None, NOW, 60));
    assert!(
        s.verifier.verify(&token).is_ok(),
        "the new key is found without waiting for a poll"
    );
}

#[test]
fn a_jwks_without_a_usable_key_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        r#"{"keys":[{"kty":"RSA","kid":"r1","n":"x","e":"AQAB"}]}"#,
    )
    .unwrap();
    let err = JwksSource::load(&path).unwrap_err().to_string();
    assert!(err.ends_with("no usable key (OKP Ed25519)"), "{err}");
    assert!(JwksSource::load(dir.path().join("missing.json")).is_err());
}
