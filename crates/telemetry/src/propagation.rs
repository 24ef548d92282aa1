//! W3C trace context on the wire: in gRPC metadata (`traceparent`,
//! `tracestate`) and as the `traceparent` string every event envelope
//! carries, so the region that applies an event can link to the span that
//! produced it.

use std::sync::LazyLock;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Error, Result};

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// Writes `cx`'s span context into gRPC request or response metadata.
/// Nothing is written when `cx` has no valid span (telemetry off).
pub fn inject_metadata(cx: &Context, metadata: &mut MetadataMap) {
    PROPAGATOR.inject_context(cx, &mut MetadataInjector(metadata));
}

/// Writes the current `tracing` span's context into `metadata`: what a
/// client does before each call.
pub fn inject_current_metadata(metadata: &mut MetadataMap) {
    inject_metadata(&tracing::Span::current().context(), metadata);
}

/// The caller's context from gRPC metadata: a remote parent for the
/// server's span (`span.set_parent(extract_metadata(request.metadata()))`).
/// Missing or malformed headers give a context with no span.
pub fn extract_metadata(metadata: &MetadataMap) -> Context {
    PROPAGATOR.extract(&MetadataExtractor(metadata))
}

/// Makes the caller's span, named in gRPC request metadata, the parent of
/// `span` (call before entering it). Without a valid caller context the
/// span stays a root.
pub fn set_parent_from_metadata(span: &tracing::Span, metadata: &MetadataMap) {
    let cx = extract_metadata(metadata);
    if cx.span().span_context().is_valid() {
        // Fails only once the span has started, or with telemetry off.
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` to store in an event envelope: the current `tracing`
/// span's, or `None` when it has none (telemetry off, or no span).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` of `span`, or `None` when it has no OpenTelemetry
/// context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    let span_context = span_ref.span_context();
    span_context
        .is_valid()
        .then(|| format_traceparent(span_context))
}

/// Whether a stored `traceparent` names a sampled span. Cheap (the flags
/// are the last two characters), so an applier can skip the events whose
/// producer was not kept before making a span for them.
pub fn is_sampled(traceparent: &str) -> bool {
    traceparent.len() >= 55
        && traceparent
            .get(traceparent.len() - 2..)
            .and_then(|flags| u8::from_str_radix(flags, 16).ok())
            .is_some_and(|flags| flags & TraceFlags::SAMPLED.to_u8() != 0)
}

/// `00-<trace id>-<span id>-<flags>`, the W3C version 00 format.
pub fn format_traceparent(span_context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

/// Parses a `traceparent` into a remote span context, by the one parser
/// (`meridian_core::traceparent`: strict for version 00, a later version
/// read by its first four fields).
pub fn parse_traceparent(value: &str) -> Result<SpanContext> {
    let parsed =
        meridian_core::traceparent::Traceparent::parse(value).map_err(|e| Error::Traceparent {
            value: value.to_owned(),
            reason: e.to_string(),
        })?;
    // Only the sampled bit is defined; others are dropped, as the
    // specification asks of a version 00 reader.
    let flags = TraceFlags::new(parsed.flags & TraceFlags::SAMPLED.to_u8());
    Ok(SpanContext::new(
        TraceId::from_bytes(parsed.trace_id.to_be_bytes()),
        SpanId::from_bytes(parsed.parent_id.to_be_bytes()),
        flags,
        true,
        TraceState::NONE,
    ))
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Both keys the propagator writes are valid ASCII metadata keys; a
        // value that is not valid metadata is dropped rather than failing
        // the call it rides on.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_and_formats_the_specification_example() {
        let cx = parse_traceparent(VALID).ok();
        assert_eq!(cx.as_ref().map(format_traceparent).as_deref(), Some(VALID));
        assert!(cx.is_some_and(|cx| cx.is_remote() && cx.is_sampled()));
    }

    #[test]
    fn refuses_malformed_values_naming_the_field() {
        for (value, needle) in [
            ("", "expected"),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                "expected",
            ),
            (
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "version",
            ),
            (
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                "trace id",
            ),
            (
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "all zeros",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                "all zeros",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
                "span id",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
                "flags",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                "four fields",
            ),
        ] {
            let err = parse_traceparent(value)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(needle), "{value:?}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn sampled_flag_is_read_from_the_end() {
        assert!(is_sampled(VALID));
        assert!(!is_sampled(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        ));
        assert!(!is_sampled("01"));
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-more";
        let cx = parse_traceparent(later).ok();
        assert_eq!(cx.map(|cx| cx.trace_flags()), Some(TraceFlags::SAMPLED));
    }
}
