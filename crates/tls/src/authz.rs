//! After the handshake: who called, and may they call this service.

use std::sync::Arc;

use meridian_core::RegionId;
use tonic::{Request, Status};

use crate::{PeerIdentity, Service};

/// The verified identity of the peer that sent `request`: set by
/// [`RequirePeer`] if it ran, otherwise read from the client certificate
/// the TLS handshake verified.
///
/// `UNAUTHENTICATED` if the request did not arrive over mutual TLS.
pub fn peer_identity<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    if let Some(identity) = request.extensions().get::<PeerIdentity>() {
        return Ok(identity.clone());
    }
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate: this service is served only over mutual TLS",
        )
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate: this service is served only over mutual TLS",
        )
    })?;
    PeerIdentity::from_cert_der(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// The caller's identity if its service is one of `allowed`; otherwise
/// `PERMISSION_DENIED` naming the caller and what is allowed, and a log
/// line saying the same.
pub fn require<T>(request: &Request<T>, allowed: &[Service]) -> Result<PeerIdentity, Status> {
    let identity = peer_identity(request).inspect_err(|status| {
        tracing::warn!(reason = %status.message(), "call refused: no peer identity");
    })?;
    authorize(&identity, allowed)?;
    Ok(identity)
}

/// `Ok` if `identity`'s service is one of `allowed`; otherwise
/// `PERMISSION_DENIED` with the reason, logged.
pub fn authorize(identity: &PeerIdentity, allowed: &[Service]) -> Result<(), Status> {
    if allowed.contains(&identity.service()) {
        return Ok(());
    }
    let allowed_list = allowed
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ");
    let reason = if allowed.is_empty() {
        format!(
            "{identity} is a {}; this service accepts no peer services",
            identity.service()
        )
    } else {
        format!(
            "{identity} is a {}; this service accepts only {allowed_list}",
            identity.service()
        )
    };
    tracing::warn!(peer = %identity, %reason, "call refused: permission denied");
    Err(Status::permission_denied(reason))
}

/// `Ok` if `identity` belongs to `claimed`, the region a peer says it
/// speaks for (in a replication stream, say); otherwise
/// `PERMISSION_DENIED`, logged.
pub fn require_region(identity: &PeerIdentity, claimed: &RegionId) -> Result<(), Status> {
    if identity.region() == claimed {
        return Ok(());
    }
    let reason = format!("{identity} may not speak for region {claimed}");
    tracing::warn!(peer = %identity, claimed_region = %claimed, %reason, "call refused: permission denied");
    Err(Status::permission_denied(reason))
}

/// A tonic interceptor that lets through only callers whose service is
/// allowed, and puts their [`PeerIdentity`] in the request's extensions,
/// where [`peer_identity`] finds it. The crate documentation shows it
/// installed with `InterceptedService`; generated servers also take it
/// through `XServer::with_interceptor`.
#[derive(Debug, Clone)]
pub struct RequirePeer {
    allowed: Arc<[Service]>,
}

impl RequirePeer {
    pub fn new(allowed: &[Service]) -> Self {
        Self {
            allowed: allowed.into(),
        }
    }
}

impl tonic::service::Interceptor for RequirePeer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let identity = require(&request, &self.allowed)?;
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}
