//! The per-RPC authorization table: which roles may call each method of a
//! protected service.
//!
//! Services not named in a policy (gRPC health, server reflection) are
//! open: Kubernetes probes and generic tools use them without a token, and
//! they reveal nothing a client of the public API does not already see. A
//! method of a protected service missing from the table is refused for
//! every role, so a new RPC is closed until someone decides who may call
//! it.

use std::collections::HashMap;

use crate::Role;

use crate::Role::{Admin, Agent, Intake, Operator, Sre};

/// Method path (`/package.Service/Method`) → roles allowed.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `/package.Service/` prefixes that require a token.
    protected: Vec<&'static str>,
    methods: HashMap<&'static str, &'static [Role]>,
}

/// What the policy says about one request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not a protected service: no token needed.
    Open,
    /// A token with one of these roles is needed (empty: nobody may call).
    Roles(&'static [Role]),
}

impl Policy {
    /// A policy protecting the service whose paths start with `prefix`
    /// (`/package.Service/`), with `methods` (full path → roles).
    pub fn new(prefix: &'static str, methods: &[(&'static str, &'static [Role])]) -> Self {
        Self {
            protected: vec![prefix],
            methods: methods.iter().copied().collect(),
        }
    }

    /// Also protects the service whose paths start with `prefix`.
    pub fn protecting(mut self, prefix: &'static str) -> Self {
        self.protected.push(prefix);
        self
    }

    pub fn access(&self, path: &str) -> Access {
        if !self.protected.iter().any(|prefix| path.starts_with(prefix)) {
            return Access::Open;
        }
        Access::Roles(self.methods.get(path).copied().unwrap_or(&[]))
    }
}

/// `meridian.v1.TicketService` on a gateway. Agents' region limits (their
/// region's tickets only) are checked by the handlers, which know the
/// ticket's owner.
pub fn gateway_policy() -> Policy {
    const P: &str = "/meridian.v1.TicketService/";
    Policy::new(
        P,
        &[
            // Intake: a new ticket is owned by the gateway's region; the
            // router forwards its caller's token here.
            (
                "/meridian.v1.TicketService/CreateTicket",
                &[Agent, Operator, Admin, Intake],
            ),
            (
                "/meridian.v1.TicketService/GetTicket",
                &[Agent, Sre, Admin, Intake],
            ),
            (
                "/meridian.v1.TicketService/ListTickets",
                &[Agent, Sre, Admin],
            ),
            (
                "/meridian.v1.TicketService/SearchTickets",
                &[Agent, Sre, Admin],
            ),
            (
                "/meridian.v1.TicketService/WatchEvents",
                &[Agent, Sre, Admin],
            ),
            ("/meridian.v1.TicketService/UpdateTicket", &[Agent, Admin]),
            // Intake: customer messages only (the gateway refuses other kinds).
            (
                "/meridian.v1.TicketService/AddNote",
                &[Agent, Admin, Intake],
            ),
            ("/meridian.v1.TicketService/Handoff", &[Agent, Admin]),
            ("/meridian.v1.TicketService/GetStatus", &[Sre, Admin]),
            // The handler checks the agent named is in the owning
            // region's roster; an agent assigns in their region only.
            ("/meridian.v1.TicketService/AssignTicket", &[Agent, Admin]),
            (
                "/meridian.v1.AgentService/ListAgents",
                &[Agent, Operator, Sre, Admin],
            ),
            // An agent sets their own presence; an admin anyone's.
            ("/meridian.v1.AgentService/SetPresence", &[Agent, Admin]),
        ],
    )
    .protecting("/meridian.v1.AgentService/")
}

/// `meridian.v1.RouterService` on the router.
pub fn router_policy() -> Policy {
    const P: &str = "/meridian.v1.RouterService/";
    Policy::new(
        P,
        &[
            (
                "/meridian.v1.RouterService/Route",
                &[Agent, Operator, Sre, Admin],
            ),
            (
                "/meridian.v1.RouterService/ActiveRegions",
                &[Agent, Operator, Sre, Admin],
            ),
            (
                "/meridian.v1.RouterService/Explain",
                &[Operator, Sre, Admin],
            ),
            (
                "/meridian.v1.RouterService/SubmitTicket",
                &[Agent, Operator, Admin, Intake],
            ),
        ],
    )
}
