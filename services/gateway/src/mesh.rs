//! The internal `MeshService` other regions' gateways (and, for
//! takeovers, the router) call over mutual TLS: it checks who calls, opens
//! the span, and hands the work to [`crate::handoff`] (`AcceptHandoff`) or
//! [`crate::failover`] (`TakeOver`). The client side is [`crate::peers`].
//!
//! `TakeOver` is the one call the router makes here (with a router
//! certificate); a returning region's own gateway may make it too, for its
//! own region only.

use std::sync::Arc;

use meridian_proto::{
    ConvertError,
    v1::{self, mesh_service_server::MeshService},
};
use meridian_replication::Replicator;
use meridian_tls::Service;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    context::TicketApi,
    error::ApiError,
    failover::Failover,
    handoff,
    spans::{self, Step},
};

/// The internal service: what other gateways (and, for takeovers, the
/// router) may ask of this one.
#[derive(Clone)]
pub struct MeshApi {
    api: TicketApi,
    failover: Option<Arc<Failover>>,
    replicator: Option<Replicator>,
}

impl MeshApi {
    pub fn new(api: TicketApi) -> Self {
        Self {
            api,
            failover: None,
            replicator: None,
        }
    }

    /// Serves `TakeOver` with this region's lease and takeovers.
    pub(crate) fn with_failover(
        mut self,
        failover: Option<Arc<Failover>>,
        replicator: Option<Replicator>,
    ) -> Self {
        self.failover = failover;
        self.replicator = replicator;
        self
    }
}

#[tonic::async_trait]
impl MeshService for MeshApi {
    async fn accept_handoff(
        &self,
        request: Request<v1::AcceptHandoffRequest>,
    ) -> Result<Response<v1::AcceptHandoffResponse>, Status> {
        let caller = meridian_tls::require(&request, &[Service::Gateway])?;
        let ticket_id =
            meridian_proto::convert::ticket_id("ticket_id", &request.get_ref().ticket_id)
                .map_err(crate::error::invalid)?;
        // The answer's span, in the ticket's trace, linked to the offer span.
        let span = spans::ticket_span(
            Step::HandoffAccept,
            self.api.region(),
            ticket_id,
            Some(request.metadata()),
        );
        span.record("meridian.handoff.to", self.api.region().as_str());
        let answer = handoff::accept(
            &self.api,
            self.replicator.as_ref(),
            &caller,
            ticket_id,
            request.into_inner(),
        )
        .instrument(span.clone())
        .await;
        match &answer {
            Ok(answer) if answer.accepted => {
                span.record("meridian.epoch", answer.new_epoch);
                spans::record_outcome(&span, "accepted", None);
            }
            Ok(answer) => spans::record_outcome(&span, "refused", Some(&answer.refusal_reason)),
            Err(error) => spans::record_outcome(&span, "failed", Some(&error.public_message())),
        }
        Ok(answer.map(Response::new)?)
    }

    async fn add_customer_message(
        &self,
        request: Request<v1::AddNoteRequest>,
    ) -> Result<Response<v1::AddNoteResponse>, Status> {
        let caller = meridian_tls::require(&request, &[Service::Gateway])?;
        tracing::debug!(caller = %caller, "customer message from a peer's mail loop");
        let (metadata, _, mut message) = request.into_parts();
        message.visibility = v1::Visibility::Inbound as i32;
        // The public path (the caller proved it is a gateway of the mesh),
        // so the same checks and clocks apply.
        let mut local = Request::new(message);
        // Its writes are the peer's mail loop's, as when it is local.
        local
            .extensions_mut()
            .insert(crate::mail::principal(caller.region()));
        if let Some(traceparent) = metadata.get(crate::TRACEPARENT_HEADER) {
            local
                .metadata_mut()
                .insert(crate::TRACEPARENT_HEADER, traceparent.clone());
        }
        meridian_proto::v1::ticket_service_server::TicketService::add_note(&self.api, local).await
    }

    async fn take_over(
        &self,
        request: Request<v1::TakeOverRequest>,
    ) -> Result<Response<v1::TakeOverResponse>, Status> {
        // The router decides takeovers; the failed region's own gateway,
        // returning, may ask to finish its takeover and learn where it ends.
        let caller = meridian_tls::require(&request, &[Service::Router, Service::Gateway])?;
        let req = request.into_inner();
        let failed = meridian_proto::convert::region_id("failed_region", &req.failed_region)
            .map_err(crate::error::invalid)?;
        if caller.service() == Service::Gateway {
            meridian_tls::require_region(&caller, &failed)?;
        }
        if req.fencing_token == 0 {
            return Err(crate::error::invalid(ConvertError::new(
                "fencing_token",
                "is required (the takeover's coordinator revision)",
            ))
            .into());
        }
        let Some(failover) = &self.failover else {
            return Err(ApiError::NoCoordinator(self.api.region().clone()).into());
        };
        let token = meridian_coord::Revision::new(req.fencing_token);
        tracing::info!(from = %failed, fencing_token = %token, caller = %caller, "takeover asked");
        let answer = failover
            .take_over(&self.api, self.replicator.as_ref(), &failed, token)
            .await?;
        Ok(Response::new(answer))
    }
}
