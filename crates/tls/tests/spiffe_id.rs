//! SPIFFE ids: display and parse are inverses, and malformed ids are
//! refused with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

use meridian_core::RegionId;
use meridian_tls::{PeerIdentity, Service, TrustDomain};
use proptest::prelude::*;

fn trust_domain() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,12}(\\.[a-z0-9_-]{1,12}){0,3}"
}

fn region() -> impl Strategy<Value = String> {
    // The slug rules of `RegionId`: a lowercase letter first, no trailing
    // or doubled '-'.
    "[a-z][a-z0-9_]{0,6}(-[a-z0-9_]{1,6}){0,2}"
}

fn service() -> impl Strategy<Value = Service> {
    prop_oneof![Just(Service::Gateway), Just(Service::Router)]
}

proptest! {
    #[test]
    fn display_then_parse_round_trips(td in trust_domain(), region in region(), service in service()) {
        let id = PeerIdentity::new(TrustDomain::new(td.clone()).unwrap(), RegionId::new(region.clone()).unwrap(), service);
        let text = id.to_string();
        prop_assert_eq!(&text, &format!("spiffe://{td}/region/{region}/{service}"));
        prop_assert_eq!(text.parse::<PeerIdentity>().unwrap(), id);
    }

    #[test]
    fn parse_then_display_round_trips_or_refuses(text in "spiffe://[a-zA-Z0-9./_%?#:-]{0,40}") {
        // Whatever parses displays as exactly what was parsed: there is one
        // spelling of each identity.
        if let Ok(id) = text.parse::<PeerIdentity>() {
            prop_assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = text.parse::<PeerIdentity>();
    }

    #[test]
    fn an_extra_or_missing_path_segment_is_refused(td in trust_domain(), region in region(), service in service()) {
        for text in [
            format!("spiffe://{td}/region/{region}/{service}/extra"),
            format!("spiffe://{td}/region/{region}"),
            format!("spiffe://{td}/region/{region}/{service}/"),
            format!("spiffe://{td}//region/{region}/{service}"),
        ] {
            let err = text.parse::<PeerIdentity>().unwrap_err().to_string();
            prop_assert!(err.contains("segments"), "{}: {}", text, err);
        }
    }
}

#[test]
fn malformed_ids_are_refused_with_a_reason() {
    let cases = [
        ("", "must start with \"spiffe://\""),
        (
            "https://meridian.local/region/us-east/gateway",
            "must start with \"spiffe://\"",
        ),
        (
            "SPIFFE://meridian.local/region/us-east/gateway",
            "must start with \"spiffe://\"",
        ),
        ("spiffe://meridian.local", "has no path"),
        (
            "spiffe:///region/us-east/gateway",
            "invalid trust domain \"\": must not be empty",
        ),
        (
            "spiffe://Meridian.local/region/us-east/gateway",
            "contains 'M'",
        ),
        (
            "spiffe://meridian.local:8443/region/us-east/gateway",
            "contains ':'",
        ),
        (
            "spiffe://user@meridian.local/region/us-east/gateway",
            "contains '@'",
        ),
        (
            "spiffe://meridian.local/zone/us-east/gateway",
            "path must start with \"region/\"",
        ),
        (
            "spiffe://meridian.local/region/US-East/gateway",
            "region: \"US-East\" must start with a lowercase letter",
        ),
        (
            "spiffe://meridian.local/region/us--east/gateway",
            "must not end with '-' or contain '--'",
        ),
        (
            "spiffe://meridian.local/region/us-east/Gateway",
            "unknown service \"Gateway\"",
        ),
        (
            "spiffe://meridian.local/region/us-east/database",
            "unknown service \"database\"; expected gateway or router",
        ),
        (
            "spiffe://meridian.local/region/us-east/gateway?x=1",
            "no query, fragment or percent-encoding",
        ),
        (
            "spiffe://meridian.local/region/us-east/gateway#f",
            "no query, fragment or percent-encoding",
        ),
        (
            "spiffe://meridian.local/region/us%2Deast/gateway",
            "no query, fragment or percent-encoding",
        ),
    ];
    for (text, reason) in cases {
        let err = text.parse::<PeerIdentity>().unwrap_err().to_string();
        assert!(
            err.contains(reason),
            "{text:?}: expected {reason:?} in {err:?}"
        );
        assert!(err.starts_with("invalid SPIFFE id"), "{err}");
    }
    let long = format!("spiffe://{}/region/us-east/gateway", "a".repeat(2100));
    assert!(
        long.parse::<PeerIdentity>()
            .unwrap_err()
            .to_string()
            .contains("longer than 2048 bytes")
    );
}

#[test]
fn trust_domains_and_services_validate() {
    assert!(TrustDomain::new("meridian.local").is_ok());
    assert!(TrustDomain::new("a".repeat(256)).is_err());
    assert_eq!(
        TrustDomain::new("Meridian").unwrap_err().to_string(),
        "invalid trust domain \"Meridian\": contains 'M'; use lowercase letters, digits, '.', '-' and '_'"
    );
    for service in Service::ALL {
        assert_eq!(service.to_string().parse::<Service>().unwrap(), service);
    }
    assert_eq!(
        "cache".parse::<Service>().unwrap_err().to_string(),
        "unknown service \"cache\"; expected gateway or router"
    );
}
