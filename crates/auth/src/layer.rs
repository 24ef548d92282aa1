//! The tower layer in front of the public services: authenticate, check
//! the role against the [`Policy`], and hand the [`Principal`] on.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::Status;

use crate::{AUTHORIZATION, AuthError, Policy, Principal, Verifier, policy::Access};

/// Authenticates and authorizes every request to the protected services of
/// a tonic server (`Server::builder().layer(auth)`). A disabled layer
/// ([`AuthLayer::disabled`]) passes everything through, so a server has
/// one type with authentication on or off.
#[derive(Clone)]
pub struct AuthLayer {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    verifier: Verifier,
    policy: Policy,
}

impl AuthLayer {
    pub fn new(verifier: Verifier, policy: Policy) -> Self {
        Self {
            shared: Some(Arc::new(Shared { verifier, policy })),
        }
    }

    /// No authentication: every request passes.
    pub fn disabled() -> Self {
        Self { shared: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was not polled ready stays here; the ready one
        // serves this request (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(shared) = self.shared.clone() else {
            return Box::pin(inner.call(request));
        };
        // What the check needs, taken out of the request before any await
        // (the request's body need not be `Sync`).
        let method = request.uri().path().to_owned();
        let token = bearer(&request).map(str::to_owned);
        Box::pin(async move {
            // Awaits only when a token names a key an issuer has not yet
            // been asked for (see `Verifier::verify_async`).
            match shared.check(&method, token).await {
                Ok(Some(principal)) => {
                    request.extensions_mut().insert(principal);
                }
                Ok(None) => {}
                Err(status) => return Ok(status.into_http()),
            }
            inner.call(request).await
        })
    }
}

impl Shared {
    /// `Ok(None)` for an open path, `Ok(Some)` for an allowed caller, the
    /// refusal otherwise (already logged).
    async fn check(
        &self,
        method: &str,
        token: Result<String, AuthError>,
    ) -> Result<Option<Principal>, Status> {
        let Access::Roles(allowed) = self.policy.access(method) else {
            return Ok(None);
        };
        let principal = match token {
            Ok(token) => self.verifier.verify_async(&token).await,
            Err(error) => Err(error),
        };
        let principal = principal.map_err(|error| {
            let reason = error.to_string();
            tracing::warn!(%method, %reason, "call refused: unauthenticated");
            Status::unauthenticated(reason)
        })?;
        self.authorize(method, allowed, principal)
    }

    fn authorize(
        &self,
        method: &str,
        allowed: &[crate::Role],
        principal: Principal,
    ) -> Result<Option<Principal>, Status> {
        if !allowed.contains(&principal.role) {
            let reason = if allowed.is_empty() {
                format!("{method} is not open to any role")
            } else {
                let roles = allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "role {} may not call {method}; allowed: {roles}",
                    principal.role
                )
            };
            tracing::warn!(%method, subject = %principal.subject, role = %principal.role, %reason, "call refused: permission denied");
            return Err(Status::permission_denied(reason));
        }
        tracing::debug!(%method, principal = %principal, "call authorized");
        Ok(Some(principal))
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer<B>(request: &http::Request<B>) -> Result<&str, AuthError> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("authorization header is not ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(format!(
            "authorization scheme {scheme:?}; expected Bearer"
        )));
    }
    Ok(token.trim())
}
