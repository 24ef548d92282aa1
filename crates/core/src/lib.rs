//! Meridian's domain core: tickets and their status machine, regions, ownership
//! epochs, notes, the replicated event envelope, hybrid logical time and
//! intake-spike detection.
//!
//! Boundary: this crate performs no I/O. It has no tokio, no tonic, no sqlx and
//! never reads the wall clock; time arrives through [`Clock`] or as an argument.
//! That is what lets the store, the gateway and the simulation share one set of
//! rules. Functions take `(state, now, input)` and return the new state or the
//! reason it cannot change.

#![forbid(unsafe_code)]

pub mod agent;
pub mod clock;
pub mod epoch;
pub mod error;
pub mod event;
pub mod hlc;
pub mod id;
pub mod idempotency;
pub mod note;
pub mod plan;
pub mod replay;
pub mod residency;
pub mod search;
pub mod sla;
pub mod spike;
pub mod text;
pub mod ticket;
pub mod traceparent;

pub use agent::{Actor, AutoAssign, Presence};
pub use clock::{Clock, ManualClock};
pub use epoch::{EPOCH_STRIDE, Epoch, Ownership, WriteVerdict};
pub use error::{Error, Result};
pub use event::{EventEnvelope, EventKind, ShiftSummary, TicketChanges};
pub use hlc::{Hlc, HlcTimestamp};
pub use id::{IdMinter, NoteId, RegionId, Skill, TicketId, Tier};
pub use idempotency::{IDEMPOTENCY_KEY_CHARS_MAX, IdempotencyKey, KeyScope};
pub use note::{HandoffNote, Note, NoteSet, Visibility};
pub use replay::{Replayed, StaleWrite, replay};
pub use search::{SEARCH_QUERY_CHARS_MAX, SEARCH_TERMS_MAX, SearchText};
pub use sla::{SlaAlert, SlaClock, SlaDeadlines, SlaMetric, SlaState};
pub use spike::{IntakeSpike, Rate, SpikeChange, SpikeConfig, SpikeDetector, SpikeKey};
pub use text::{TextKind, check_free_text, echo};
pub use ticket::{NewTicket, Priority, Status, Ticket, TicketPatch};
