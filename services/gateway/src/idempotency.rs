//! Idempotent creation (issue 17): whose a key is, the digests the store
//! keeps, and the pruning of old keys. The lookup itself is the store's,
//! in the creation's own transaction (`Store::create_ticket_idempotent`).

use std::time::Duration;

use meridian_core::{IdempotencyKey, KeyScope, NewTicket};
use ring::digest::{SHA256, digest};

use crate::{context::TicketApi, error::ApiError};

/// How long a key is kept: a retry within this window gets the same ticket.
pub const IDEMPOTENCY_KEY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How often the gateway deletes keys past their retention.
pub const IDEMPOTENCY_PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// The most keys one pruning transaction deletes; a backlog takes several.
pub const IDEMPOTENCY_PRUNE_BATCH_MAX: u32 = 1_000;
/// The most pruning transactions per interval, so pruning cannot crowd out
/// creations on the writer (1000 × 20 keys per 10 minutes is far above
/// any intake this region serves).
const PRUNE_BATCHES_PER_INTERVAL_MAX: u32 = 20;

/// Whose key it is: the token's subject when the call is authenticated,
/// else the ticket's customer, so that two tenants never share a key.
pub(crate) fn scope(principal: Option<&meridian_auth::Principal>, new: &NewTicket) -> KeyScope {
    match principal {
        Some(principal) => KeyScope::Subject(principal.subject.clone()),
        None => KeyScope::Customer(new.customer.clone()),
    }
}

/// The digests the store keeps for a key: of the scope and key, and of the
/// validated request (its canonical JSON: sets are ordered, defaults
/// filled in, so equal requests give equal digests).
pub(crate) fn store_key(
    scope: &KeyScope,
    key: &IdempotencyKey,
    new: &NewTicket,
) -> Result<meridian_store::IdempotencyKey, ApiError> {
    let request = serde_json::to_vec(new).map_err(|e| {
        ApiError::Internal(format!("cannot encode a new ticket for its digest: {e}"))
    })?;
    // The NUL separator cannot occur in a key (printable ASCII), so no two
    // (scope, key) pairs encode alike.
    let scoped = format!("meridian.idempotency.v1\0{}\0{}", scope.canonical(), key);
    Ok(meridian_store::IdempotencyKey {
        key_digest: hex(digest(&SHA256, scoped.as_bytes()).as_ref()),
        request_digest: hex(digest(&SHA256, &request).as_ref()),
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Deletes keys older than [`IDEMPOTENCY_KEY_RETENTION`] every
/// [`IDEMPOTENCY_PRUNE_INTERVAL`], in batches: a key then lives between 24
/// hours and 24 hours and one interval.
pub(crate) async fn prune(api: TicketApi) {
    let mut tick = tokio::time::interval(IDEMPOTENCY_PRUNE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(retention) = jiff::SignedDuration::try_from(IDEMPOTENCY_KEY_RETENTION) else {
            return;
        };
        let before = api.now().saturating_sub(retention).unwrap_or(api.now());
        let mut deleted = 0;
        for _ in 0..PRUNE_BATCHES_PER_INTERVAL_MAX {
            match api
                .store()
                .prune_idempotency_keys(before, IDEMPOTENCY_PRUNE_BATCH_MAX)
                .await
            {
                Ok(n) => {
                    deleted += n;
                    if n < u64::from(IDEMPOTENCY_PRUNE_BATCH_MAX) {
                        break;
                    }
                }
                Err(error) => {
                    // Only the active replica runs this task; a store
                    // that was superseded refuses, and its process stops.
                    tracing::debug!(error = %error, "idempotency keys not pruned");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "idempotency keys pruned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(subject: &str) -> NewTicket {
        meridian_proto::convert::create_from_proto(meridian_proto::v1::CreateTicketRequest {
            subject: subject.into(),
            customer: "acme".into(),
            ..Default::default()
        })
        .unwrap()
        .0
    }

    #[test]
    fn digests_separate_callers_keys_and_requests() {
        let key = IdempotencyKey::new("k1").unwrap();
        let a = KeyScope::Subject("alice".into());
        let b = KeyScope::Subject("bob".into());
        let first = store_key(&a, &key, &new("VPN down")).unwrap();
        assert_eq!(first, store_key(&a, &key, &new("VPN down")).unwrap());
        assert_eq!(first.key_digest.len(), 64);
        let other_caller = store_key(&b, &key, &new("VPN down")).unwrap();
        assert_ne!(first.key_digest, other_caller.key_digest);
        let other_key =
            store_key(&a, &IdempotencyKey::new("k2").unwrap(), &new("VPN down")).unwrap();
        assert_ne!(first.key_digest, other_key.key_digest);
        let other_body = store_key(&a, &key, &new("VPN up")).unwrap();
        assert_eq!(first.key_digest, other_body.key_digest);
        assert_ne!(first.request_digest, other_body.request_digest);
    }
}
