//! `RegionLoadService`: the region's open load, for the router's probes
//! (load-aware routing). Open like grpc.health, since it carries counts
//! only. Counted from the store at most once a second, so probes from
//! several router replicas cost one query. With a roster it adds the
//! region's staffing now: agents on shift and available, their capacity,
//! and the unassigned queue.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use meridian_proto::{
    timestamp_to_proto,
    v1::{self, region_load_service_server::RegionLoadService},
};
use tonic::{Request, Response, Status};

use crate::{context::TicketApi, error::from_store};

/// How long a count is answered again.
const COUNT_REUSE: Duration = Duration::from_secs(1);

/// Statuses that are no longer work.
const DONE: [&str; 2] = ["solved", "closed"];

#[derive(Clone)]
pub(crate) struct LoadApi {
    api: TicketApi,
    last: Arc<Mutex<Option<(Instant, v1::GetLoadResponse)>>>,
}

impl LoadApi {
    pub(crate) fn new(api: TicketApi) -> Self {
        Self {
            api,
            last: Arc::new(Mutex::new(None)),
        }
    }
}

#[tonic::async_trait]
impl RegionLoadService for LoadApi {
    async fn get_load(
        &self,
        _request: Request<v1::GetLoadRequest>,
    ) -> Result<Response<v1::GetLoadResponse>, Status> {
        if let Some((at, answer)) = &*self.last.lock().unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < COUNT_REUSE
        {
            return Ok(Response::new(answer.clone()));
        }
        let counts = self
            .api
            .store()
            .queue_counts(self.api.region())
            .await
            .map_err(|e| Status::from(from_store(e)))?;
        let open_tickets = counts
            .by_status
            .iter()
            .filter(|(status, _)| !DONE.contains(&status.as_str()))
            .map(|(_, n)| n)
            .sum();
        let mut answer = v1::GetLoadResponse {
            region: self.api.region().to_string(),
            open_tickets,
            counted_at: Some(timestamp_to_proto(self.api.now())),
            ..Default::default()
        };
        if let (Some(roster), Some(rules)) = (self.api.roster(), self.api.rules()) {
            let (agents, assignments) = self
                .api
                .agents_now(&roster, &rules)
                .await
                .map_err(Status::from)?;
            let on_shift = agents.iter().filter(|a| a.shift.is_some());
            answer.has_roster = true;
            answer.agents_on_shift = count(on_shift.clone().count());
            answer.agents_available = count(
                on_shift
                    .clone()
                    .filter(|a| a.presence == meridian_core::Presence::Available)
                    .count(),
            );
            answer.agent_capacity = on_shift.map(|a| u64::from(a.agent.max_open)).sum();
            answer.unassigned_open = u64::from(assignments.unassigned);
            answer.oldest_unassigned_at = assignments.oldest_unassigned.map(timestamp_to_proto);
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), answer.clone()));
        Ok(Response::new(answer))
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
