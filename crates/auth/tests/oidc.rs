//! Tokens from an organisation's identity provider: RS256 and ES256 tokens
//! minted by PyJWT (an implementation independent of ours), verified with
//! keys found by OIDC discovery on a real HTTPS issuer on loopback. The
//! allow-list, key rotation at the issuer, `Cache-Control`, an issuer that
//! goes away, and roles mapped from `groups`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod support;

use std::{sync::Arc, time::Duration};

use meridian_auth::{
    Algorithm, AuthError, AuthSettings, ClaimMapping, Principal, Role, Verifier, jwks::ReloadTask,
};
use meridian_core::{ManualClock, RegionId};
use serde_json::{Value, json};
use support::{TestIssuer, now, pyjwt, wait_until};

/// The wall clock's now: the tokens carry real times.
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(jiff::Timestamp::now()))
}

fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "iss": "ISSUER", "aud": ["meridian", "other"], "iat": now(), "exp": now() + 3600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

/// A verifier of `issuer`'s tokens, as `[auth] issuer = …` configures it:
/// RS256 and ES256 allowed, roles from `groups`.
async fn verifier(issuer: &TestIssuer) -> (Verifier, ReloadTask) {
    let mut settings = AuthSettings::from_issuer(&issuer.url);
    settings.ca = Some(issuer.ca.clone());
    settings.audience = Some("meridian".into());
    settings.algorithms = Some(vec![Algorithm::RS256, Algorithm::ES256]);
    settings.claims = ClaimMapping {
        role: "groups".into(),
        roles: [
            ("meridian-admins".to_owned(), Role::Admin),
            ("sre-oncall".to_owned(), Role::Sre),
            ("support-eu".to_owned(), Role::Agent),
        ]
        .into(),
        ..ClaimMapping::default()
    };
    let (verifier, task) = settings.start_verifier(clock()).unwrap();
    let keys = verifier.keys().clone();
    wait_until("the issuer's keys", Duration::from_secs(10), || {
        keys.status().confirmed_at.is_some()
    })
    .await;
    (verifier, task)
}

/// Replaces the placeholder issuer in every token's claims.
fn at(
    issuer: &TestIssuer,
    tokens: Vec<(&'static str, &'static str, Value)>,
) -> Vec<(&'static str, &'static str, Value)> {
    tokens
        .into_iter()
        .map(|(kid, alg, mut claims)| {
            if claims["iss"] == "ISSUER" {
                claims["iss"] = json!(issuer.url);
            }
            (kid, alg, claims)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_are_accepted_and_roles_come_from_groups() {
    // The issuer's URL is known once it listens; the keys are served after.
    let issuer = TestIssuer::start(json!({"keys": []}), Some("max-age=300")).await;
    let tokens = at(
        &issuer,
        vec![
            (
                "rsa-1",
                "RS256",
                claims("ana", json!({"groups": ["everyone", "meridian-admins"]})),
            ),
            (
                "ec-1",
                "ES256",
                claims("sam", json!({"groups": ["sre-oncall", "support-eu"]})),
            ),
            (
                "ec-1",
                "ES256",
                claims("eve", json!({"groups": "support-eu", "region": "eu-west"})),
            ),
            // Refused: not on the allow-list, though the key is good.
            (
                "ed-1",
                "EdDSA",
                claims("ed", json!({"groups": ["meridian-admins"]})),
            ),
            (
                "rsa-1",
                "RS384",
                claims("rs384", json!({"groups": ["meridian-admins"]})),
            ),
            // Refused by the claims.
            (
                "rsa-1",
                "RS256",
                claims("nobody", json!({"groups": ["everyone"]})),
            ),
            (
                "rsa-1",
                "RS256",
                claims("agent", json!({"groups": ["support-eu"]})),
            ),
            (
                "rsa-1",
                "RS256",
                claims(
                    "x",
                    json!({"groups": ["meridian-admins"], "iss": "https://evil.example"}),
                ),
            ),
            (
                "rsa-1",
                "RS256",
                claims("x", json!({"groups": ["meridian-admins"], "aud": "other"})),
            ),
            (
                "rsa-1",
                "RS256",
                claims(
                    "x",
                    json!({"groups": ["meridian-admins"], "exp": now() - 600}),
                ),
            ),
            // An ES256 token under the RSA key's kid.
            (
                "ec-1",
                "ES256",
                claims("x", json!({"groups": ["meridian-admins"]})),
            ),
        ],
    );
    let Some(minted) = pyjwt(
        &[("rsa-1", "RSA"), ("ec-1", "EC"), ("ed-1", "OKP")],
        &tokens,
    ) else {
        return;
    };
    issuer.set_jwks(minted.jwks_of(&["rsa-1", "ec-1", "ed-1"]));
    let (verifier, _task) = verifier(&issuer).await;
    let keys = verifier.keys().current();
    assert_eq!(
        keys.kids(),
        ["ec-1", "rsa-1"],
        "the Ed25519 key serves no allowed algorithm"
    );

    let t = &minted.tokens;
    let region = |r: &str| Some(RegionId::new(r).unwrap());
    assert_eq!(
        verifier.verify_async(&t[0]).await.unwrap(),
        Principal {
            subject: "ana".into(),
            role: Role::Admin,
            region: None
        }
    );
    assert_eq!(
        verifier.verify(&t[1]).unwrap().role,
        Role::Sre,
        "the broadest of the mapped groups"
    );
    assert_eq!(
        verifier.verify(&t[2]).unwrap(),
        Principal {
            subject: "eve".into(),
            role: Role::Agent,
            region: region("eu-west")
        }
    );

    let refused = |i: usize| verifier.verify(&t[i]).unwrap_err();
    assert!(
        matches!(refused(3), AuthError::Algorithm(m) if m.contains("\"EdDSA\": only RS256, ES256 accepted"))
    );
    assert!(matches!(refused(4), AuthError::Algorithm(m) if m.contains("\"RS384\"")));
    assert_eq!(
        refused(5).to_string(),
        "token claims: groups (1 values) names none of the groups auth.claims.roles maps"
    );
    assert_eq!(
        refused(6).to_string(),
        "token claims: an agent token needs a region claim"
    );
    assert!(matches!(refused(7), AuthError::Issuer { .. }));
    assert!(matches!(refused(8), AuthError::Audience { .. }));
    assert!(matches!(refused(9), AuthError::Expired { .. }));
    // The RSA key's header over an EC signature: nothing verifies.
    let forged = {
        let es = &t[10];
        let rs = &t[0];
        let header = rs.split('.').next().unwrap();
        let rest: Vec<&str> = es.split('.').skip(1).collect();
        format!("{header}.{}.{}", rest[0], rest[1])
    };
    assert!(matches!(
        verifier.verify(&forged),
        Err(AuthError::BadSignature)
    ));
    assert!(verifier.keys().status().healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_issuer_key_is_fetched_on_its_first_token_at_most_once_per_30_seconds() {
    let issuer = TestIssuer::start(json!({"keys": []}), Some("max-age=3600")).await;
    let groups = || json!({"groups": ["sre-oncall"]});
    let tokens = at(
        &issuer,
        vec![
            ("rsa-1", "RS256", claims("a", groups())),
            ("rsa-2", "RS256", claims("b", groups())),
            ("ec-3", "ES256", claims("c", groups())),
        ],
    );
    let Some(minted) = pyjwt(
        &[("rsa-1", "RSA"), ("rsa-2", "RSA"), ("ec-3", "EC")],
        &tokens,
    ) else {
        return;
    };
    issuer.set_jwks(minted.jwks_of(&["rsa-1"]));
    let (verifier, _task) = verifier(&issuer).await;
    let t = &minted.tokens;
    assert!(verifier.verify_async(&t[0]).await.is_ok());
    assert_eq!(issuer.jwks_hits(), 1);

    // The issuer rotates: the first token under the new kid fetches the
    // keys (once) and is accepted.
    issuer.set_jwks(minted.jwks_of(&["rsa-1", "rsa-2"]));
    assert_eq!(verifier.verify_async(&t[1]).await.unwrap().subject, "b");
    assert_eq!(issuer.jwks_hits(), 2);
    assert!(verifier.verify_async(&t[1]).await.is_ok());
    assert_eq!(issuer.jwks_hits(), 2, "a known kid fetches nothing");

    // Another rotation within 30 s: unknown kids fetch nothing more, so a
    // stream of forged kids cannot become a stream of requests.
    issuer.set_jwks(minted.jwks_of(&["rsa-2", "ec-3"]));
    for _ in 0..5 {
        assert!(
            matches!(verifier.verify_async(&t[2]).await, Err(AuthError::UnknownKey(kid)) if kid == "ec-3")
        );
        assert!(matches!(
            verifier.verify(&t[2]),
            Err(AuthError::UnknownKey(_))
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        issuer.jwks_hits(),
        2,
        "rate-limited: at most one fetch per 30 s for unknown kids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_says_when_the_keys_are_fetched_again() {
    let short = TestIssuer::start(json!({"keys": []}), Some("public, max-age=1")).await;
    let long = TestIssuer::start(json!({"keys": []}), Some("max-age=3600")).await;
    let Some(minted) = pyjwt(&[("rsa-1", "RSA")], &[]) else {
        return;
    };
    short.set_jwks(minted.jwks_of(&["rsa-1"]));
    long.set_jwks(minted.jwks_of(&["rsa-1"]));
    let (_a, _task_a) = verifier(&short).await;
    let (_b, _task_b) = verifier(&long).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (short_hits, long_hits) = (short.jwks_hits(), long.jwks_hits());
    assert!(
        (3..=5).contains(&short_hits),
        "max-age=1: a fetch a second, got {short_hits} in 3.5 s"
    );
    assert_eq!(long_hits, 1, "max-age=3600: no fetch before the hour is up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_keeps_the_last_good_keys_and_says_so() {
    let issuer = TestIssuer::start(json!({"keys": []}), Some("max-age=1")).await;
    let tokens = at(
        &issuer,
        vec![(
            "ec-1",
            "ES256",
            claims("a", json!({"groups": ["sre-oncall"]})),
        )],
    );
    let Some(minted) = pyjwt(&[("ec-1", "EC")], &tokens) else {
        return;
    };
    issuer.set_jwks(minted.jwks_of(&["ec-1"]));
    let (verifier, _task) = verifier(&issuer).await;
    let keys = verifier.keys().clone();
    assert!(keys.status().healthy());

    issuer.stop();
    wait_until("a failed refresh", Duration::from_secs(10), || {
        keys.status().last_error.is_some()
    })
    .await;
    let status = keys.status();
    assert!(!status.healthy() && status.failures >= 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("/.well-known/openid-configuration"),
        "{status:?}"
    );
    assert_eq!(keys.current().kids(), ["ec-1"], "the last good keys stay");
    assert_eq!(
        verifier.verify_async(&minted.tokens[0]).await.unwrap().role,
        Role::Sre
    );
    assert!(
        status.age().unwrap() >= Duration::from_millis(900),
        "the keys' age keeps growing: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_is_reached_only_over_https_it_trusts() {
    // No CA given: the public roots do not vouch for the test CA.
    let issuer = TestIssuer::start(json!({"keys": []}), None).await;
    let Some(minted) = pyjwt(&[("rsa-1", "RSA")], &[]) else {
        return;
    };
    issuer.set_jwks(minted.jwks_of(&["rsa-1"]));
    let mut settings = AuthSettings::from_issuer(&issuer.url);
    settings.reload_interval_ms = Some(100);
    let (verifier, _task) = settings.start_verifier(clock()).unwrap();
    let keys = verifier.keys().clone();
    wait_until("a failed fetch", Duration::from_secs(10), || {
        keys.status().last_error.is_some()
    })
    .await;
    let error = keys.status().last_error.unwrap();
    assert!(
        error.contains("TLS") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(keys.current().is_empty() && !keys.status().healthy());

    let plain = AuthSettings::from_issuer("http://localhost:1");
    let err = plain.start_verifier(clock()).unwrap_err().to_string();
    assert!(err.contains("must be an https:// URL"), "{err}");
}
