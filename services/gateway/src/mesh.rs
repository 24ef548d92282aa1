//! The gateway's side of the mesh: the internal `MeshService` other
//! regions' gateways call over mutual TLS, and the client that calls theirs.
//!
//! Handoff A→B, as the design has it: A records `HandoffOffered` (fenced on
//! its epoch; A stops owner-scoped writes), then calls B's
//! `AcceptHandoff`. B waits until replication has brought A's log up to the
//! offer, decides (the ticket must be offered to B; with rules, B must be on
//! shift and cover the ticket's skills), and records `HandoffAccepted` at
//! the next epoch B owns before it answers. A's call therefore returns only
//! once B's acceptance is durable. A refusal comes back as an answer; A
//! records `HandoffRefused` and keeps the ticket.
//!
//! `TakeOver` is the one call the router makes here (with a router
//! certificate); a returning region's own gateway may make it too, for its
//! own region only. The work is in [`crate::failover`].

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use meridian_core::{Epoch, RegionId, Ticket};
use meridian_proto::v1::{self, mesh_service_client::MeshServiceClient, mesh_service_server::MeshService};
use meridian_tls::{GatewayChannels, MeshTls, Service};
use tonic::{Request, Response, Status, transport::Channel};

use meridian_replication::Replicator;

use crate::{error::from_store, failover::Failover, service::TicketApi};

/// Calls to other regions' gateways.
pub struct MeshLink {
    channels: GatewayChannels,
    pub(crate) handoff_timeout: Duration,
}

impl MeshLink {
    pub fn new(tls: MeshTls, peers: BTreeMap<RegionId, String>, handoff_timeout: Duration) -> Self {
        Self { channels: GatewayChannels::new(tls, peers), handoff_timeout }
    }

    pub(crate) fn knows(&self, region: &RegionId) -> bool {
        self.channels.knows(region)
    }

    /// A channel to `region`'s gateway, which must prove it is that
    /// region's gateway. Channels connect lazily and are reused.
    fn channel(&self, region: &RegionId) -> Result<Channel, Status> {
        self.channels.channel(region).map_err(|e| {
            tracing::error!(peer = %region, error = %e, "cannot set up a channel to the peer");
            Status::unavailable(format!("cannot reach {region}: {e}"))
        })
    }

    pub(crate) async fn accept_handoff(
        &self,
        to: &RegionId,
        request: v1::AcceptHandoffRequest,
    ) -> Result<v1::AcceptHandoffResponse, Status> {
        let mut client = MeshServiceClient::new(self.channel(to)?);
        let mut request = Request::new(request);
        request.set_timeout(self.handoff_timeout);
        Ok(client.accept_handoff(request).await?.into_inner())
    }

    /// Asks `successor` to finish the takeover of this region and say where
    /// it ends in its log (a returning region).
    pub(crate) async fn take_over(
        &self,
        successor: &RegionId,
        request: v1::TakeOverRequest,
        timeout: Duration,
    ) -> Result<v1::TakeOverResponse, Status> {
        let mut client = MeshServiceClient::new(self.channel(successor)?);
        let mut request = Request::new(request);
        request.set_timeout(timeout);
        Ok(client.take_over(request).await?.into_inner())
    }
}

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
        Self { api, failover: None, replicator: None }
    }

    /// Serves `TakeOver` with this region's lease and takeovers.
    pub(crate) fn with_failover(mut self, failover: Option<Arc<Failover>>, replicator: Option<Replicator>) -> Self {
        self.failover = failover;
        self.replicator = replicator;
        self
    }
}

fn refused(reason: impl Into<String>) -> Response<v1::AcceptHandoffResponse> {
    Response::new(v1::AcceptHandoffResponse { accepted: false, refusal_reason: reason.into(), ..Default::default() })
}

#[tonic::async_trait]
impl MeshService for MeshApi {
    async fn accept_handoff(
        &self,
        request: Request<v1::AcceptHandoffRequest>,
    ) -> Result<Response<v1::AcceptHandoffResponse>, Status> {
        let caller = meridian_tls::require(&request, &[Service::Gateway])?;
        let req = request.into_inner();
        let id = meridian_proto::convert::ticket_id("ticket_id", &req.ticket_id).map_err(crate::error::invalid)?;
        let from = meridian_proto::convert::region_id("from_region", &req.from_region).map_err(crate::error::invalid)?;
        // A gateway speaks only for its own region.
        meridian_tls::require_region(&caller, &from)?;
        let store = self.api.store();
        let me = self.api.region().clone();

        // The offer reaches this region through replication; wait for it.
        let applied = store.wait_applied(&from, req.offer_seq, self.api.handoff_wait()).await.map_err(from_store)?;
        if !applied {
            return Err(Status::unavailable(format!(
                "{me} has not yet applied {from}'s log up to the offer (seq {}); retry",
                req.offer_seq
            )));
        }
        let Some(record) = store.get_ticket(id).await.map_err(from_store)? else {
            return Ok(refused(format!("ticket {id} is unknown in {me}")));
        };
        let ticket = record.ticket;
        let previous = Epoch::from_raw(req.previous_epoch);
        // Asked again after accepting (the first answer was lost): the same
        // answer, from the log.
        if ticket.owner.owner_region == me && ticket.owner.epoch > previous {
            return Ok(Response::new(self.previous_acceptance(&ticket, &from, req.offer_seq).await?));
        }
        if let Err(fenced) = self.api.check_gate() {
            return Ok(refused(fenced.message().to_owned()));
        }
        if let Some(reason) = self.api.handoff_refusal(&ticket) {
            tracing::info!(ticket_id = %id, from = %from, reason = %reason, "handoff refused");
            return Ok(refused(reason));
        }
        let new_epoch = ticket.decide_accept(&me, self.api.region_index(), &from).map_err(crate::error::from_core)?;
        let meta = self.api.meta_with(None);
        let (_, event) = store
            .accept_handoff(id, from.clone(), req.offer_seq, previous, new_epoch, meta)
            .await
            .map_err(from_store)?;
        tracing::info!(ticket_id = %id, from = %from, epoch = %new_epoch, seq = event.origin_seq, "handoff accepted");
        Ok(Response::new(v1::AcceptHandoffResponse {
            accepted: true,
            refusal_reason: String::new(),
            new_epoch: new_epoch.raw(),
            accept_seq: event.origin_seq,
        }))
    }

    async fn take_over(
        &self,
        request: Request<v1::TakeOverRequest>,
    ) -> Result<Response<v1::TakeOverResponse>, Status> {
        // The router decides takeovers; the failed region's own gateway,
        // returning, may ask to finish its takeover and learn where it ends.
        let caller = meridian_tls::require(&request, &[Service::Router, Service::Gateway])?;
        let req = request.into_inner();
        let failed =
            meridian_proto::convert::region_id("failed_region", &req.failed_region).map_err(crate::error::invalid)?;
        if caller.service() == Service::Gateway {
            meridian_tls::require_region(&caller, &failed)?;
        }
        if req.fencing_token == 0 {
            return Err(Status::invalid_argument("fencing_token: is required (the takeover's coordinator revision)"));
        }
        // Unimplemented rather than a precondition: the router takes a
        // failed precondition as "nothing left to do", and a gateway
        // without a coordinator must be fixed, not skipped.
        let Some(failover) = &self.failover else {
            return Err(Status::unimplemented(format!(
                "{} has no [coordinator] configured; it cannot take regions over",
                self.api.region()
            )));
        };
        let token = meridian_coord::Revision::new(req.fencing_token);
        tracing::info!(from = %failed, fencing_token = %token, caller = %caller, "takeover asked");
        let answer = failover.take_over(&self.api, self.replicator.as_ref(), &failed, token).await?;
        Ok(Response::new(answer))
    }
}

impl MeshApi {
    async fn previous_acceptance(
        &self,
        ticket: &Ticket,
        from: &RegionId,
        offer_seq: u64,
    ) -> Result<v1::AcceptHandoffResponse, Status> {
        let events = self.api.store().events_for_ticket(ticket.id).await.map_err(from_store)?;
        let accepted = events.iter().rev().find(|e| {
            matches!(&e.kind, meridian_core::EventKind::HandoffAccepted { from: f, offer_seq: s, .. }
                if f == from && *s == offer_seq)
                && &e.origin_region == self.api.region()
        });
        match accepted {
            Some(event) => Ok(v1::AcceptHandoffResponse {
                accepted: true,
                refusal_reason: String::new(),
                new_epoch: event.epoch.raw(),
                accept_seq: event.origin_seq,
            }),
            None => Err(Status::failed_precondition(format!(
                "ticket {} is already owned by {} at epoch {}",
                ticket.id, ticket.owner.owner_region, ticket.owner.epoch
            ))),
        }
    }
}
