//! Calls to other regions' gateways over mutual TLS (`MeshService`): the
//! handoff saga's `AcceptHandoff` and a returning region's `TakeOver`.
//! Each peer must prove it is that region's gateway.

use std::{collections::BTreeMap, time::Duration};

use meridian_core::RegionId;
use meridian_proto::v1::{self, mesh_service_client::MeshServiceClient};
use meridian_tls::{GatewayChannels, MeshTls};
use tonic::{Request, transport::Channel};

use crate::error::ApiError;

/// Calls to other regions' gateways.
pub struct MeshLink {
    channels: GatewayChannels,
    pub(crate) handoff_timeout: Duration,
}

impl MeshLink {
    pub fn new(tls: MeshTls, peers: BTreeMap<RegionId, String>, handoff_timeout: Duration) -> Self {
        Self {
            channels: GatewayChannels::new(tls, peers),
            handoff_timeout,
        }
    }

    pub(crate) fn knows(&self, region: &RegionId) -> bool {
        self.channels.knows(region)
    }

    /// A channel to `region`'s gateway, which must prove it is that
    /// region's gateway. Channels connect lazily and are reused.
    fn channel(&self, region: &RegionId) -> Result<Channel, ApiError> {
        self.channels.channel(region).map_err(|e| {
            tracing::error!(peer = %region, error = %e, "cannot set up a channel to the peer");
            ApiError::PeerUnreachable {
                region: region.clone(),
                detail: e.to_string(),
            }
        })
    }

    pub(crate) async fn accept_handoff(
        &self,
        to: &RegionId,
        request: v1::AcceptHandoffRequest,
    ) -> Result<v1::AcceptHandoffResponse, ApiError> {
        let mut client = MeshServiceClient::new(self.channel(to)?);
        let mut request = Request::new(request);
        request.set_timeout(self.handoff_timeout);
        // The target's answer span links to the offer span (the current one).
        meridian_telemetry::propagation::inject_current_metadata(request.metadata_mut());
        Ok(client.accept_handoff(request).await?.into_inner())
    }

    /// Hands a customer's mail to `owner`, the region that owns its ticket
    /// (`MeshService.AddCustomerMessage`).
    pub(crate) async fn add_customer_message(
        &self,
        owner: &RegionId,
        request: v1::AddNoteRequest,
    ) -> Result<v1::AddNoteResponse, tonic::Status> {
        let mut client = MeshServiceClient::new(self.channel(owner).map_err(tonic::Status::from)?);
        let mut request = Request::new(request);
        request.set_timeout(self.handoff_timeout);
        meridian_telemetry::propagation::inject_current_metadata(request.metadata_mut());
        Ok(client.add_customer_message(request).await?.into_inner())
    }

    /// Asks `successor` to finish the takeover of this region and say where
    /// it ends in its log (a returning region).
    pub(crate) async fn take_over(
        &self,
        successor: &RegionId,
        request: v1::TakeOverRequest,
        timeout: Duration,
    ) -> Result<v1::TakeOverResponse, ApiError> {
        let mut client = MeshServiceClient::new(self.channel(successor)?);
        let mut request = Request::new(request);
        request.set_timeout(timeout);
        meridian_telemetry::propagation::inject_current_metadata(request.metadata_mut());
        Ok(client.take_over(request).await?.into_inner())
    }
}
