//! The W3C trace context `traceparent` header
//! (`version-traceid-parentid-flags`): the one parser every crate uses, for
//! an incoming gRPC header (gateway), a replicated event's envelope
//! (meridian-proto) and a span context to link to (meridian-telemetry).
//!
//! Strict for version 00 (exactly four fields); a later version is read by
//! its first four fields, as the specification asks. All fields are
//! lowercase hex; version `ff` and all-zero ids are invalid.

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    pub version: u8,
    /// The trace id's 128 bits (a ticket's trace id is its id's bits).
    pub trace_id: u128,
    /// The parent (span) id.
    pub parent_id: u64,
    pub flags: u8,
}

/// Why a `traceparent` was refused; its text names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceparentError {
    #[error("expected version-traceid-parentid-flags")]
    Shape,
    #[error("the version must be two lowercase hex digits other than ff")]
    Version,
    #[error("version 00 has exactly four fields")]
    ExtraFields,
    #[error("the trace id must be 32 lowercase hex digits")]
    TraceId,
    #[error("the parent id (the span id) must be 16 lowercase hex digits")]
    ParentId,
    #[error("the flags must be two lowercase hex digits")]
    Flags,
    #[error("the trace id must not be all zeros")]
    TraceIdZero,
    #[error("the parent id (the span id) must not be all zeros")]
    ParentIdZero,
}

/// The `sampled` bit of the flags.
pub const SAMPLED: u8 = 0x01;

impl Traceparent {
    /// Parses `value`; see the module documentation for the rules.
    pub fn parse(value: &str) -> Result<Self, TraceparentError> {
        let mut parts = value.split('-');
        let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TraceparentError::Shape);
        };
        let version = hex(version, 2)
            .filter(|v| *v != 0xff)
            .ok_or(TraceparentError::Version)?;
        if version == 0 && parts.next().is_some() {
            return Err(TraceparentError::ExtraFields);
        }
        let trace_id = hex(trace_id, 32).ok_or(TraceparentError::TraceId)?;
        let parent_id = hex(parent_id, 16).ok_or(TraceparentError::ParentId)?;
        let flags = hex(flags, 2).ok_or(TraceparentError::Flags)?;
        if trace_id == 0 {
            return Err(TraceparentError::TraceIdZero);
        }
        if parent_id == 0 {
            return Err(TraceparentError::ParentIdZero);
        }
        Ok(Self {
            version: version as u8,
            trace_id,
            parent_id: parent_id as u64,
            flags: flags as u8,
        })
    }

    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// Exactly `len` lowercase hex digits (at most 32), as a number.
fn hex(text: &str, len: usize) -> Option<u128> {
    let lower = text
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if text.len() != len || !lower {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

impl std::fmt::Display for Traceparent {
    /// Version 00 form: a later version's extra fields are not kept.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_header_parses_and_prints_back() {
        let parsed = Traceparent::parse(VALID).unwrap();
        assert_eq!(parsed.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(parsed.parent_id, 0xb7ad6b7169203331);
        assert!(parsed.is_sampled());
        assert_eq!(parsed.to_string(), VALID);
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-more";
        let parsed = Traceparent::parse(later).unwrap();
        assert_eq!((parsed.version, parsed.flags), (1, 3));
    }

    #[test]
    fn each_bad_field_is_named() {
        use TraceparentError as E;
        for (value, error) in [
            ("", E::Shape),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                E::Shape,
            ),
            (
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                E::Version,
            ),
            (
                "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                E::Version,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                E::ExtraFields,
            ),
            (
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                E::TraceId,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
                E::ParentId,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
                E::Flags,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-+1",
                E::Flags,
            ),
            (
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                E::TraceIdZero,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                E::ParentIdZero,
            ),
        ] {
            assert_eq!(Traceparent::parse(value), Err(error), "{value:?}");
        }
    }
}
