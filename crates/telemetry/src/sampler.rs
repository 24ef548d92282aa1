//! Which traces are kept: a ratio decided from the trace id alone, so every
//! region keeps or drops the same ticket's spans.
//!
//! Why not the SDK's `TraceIdRatioBased`: it reads the low 64 bits of the
//! trace id, whose top bits in a UUIDv7 are the fixed variant bits `10`.
//! With ticket ids as trace ids it would keep no ticket at ratios below
//! one half and far too many above. This sampler reads only the low 56
//! bits (random in a UUIDv7 and, per W3C Trace Context level 2, in any
//! random trace id) and follows OpenTelemetry's consistent probability
//! sampling: keep when the randomness is at least the rejection threshold
//! `(1 - ratio) * 2^56`.

use opentelemetry::{
    Context, KeyValue,
    trace::{Link, SpanKind, TraceContextExt, TraceId},
};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

const RANDOM_BITS: u32 = 56;
const RANDOM_MASK: u64 = (1 << RANDOM_BITS) - 1;

/// Keeps `ratio` of traces, decided from the trace id's low 56 bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TicketRatioSampler {
    /// Keep iff the trace's randomness is at least this; `2^56` keeps none.
    threshold: u64,
}

impl TicketRatioSampler {
    /// `ratio` is clamped to 0.0..=1.0 (NaN keeps nothing).
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        let scale = (1u64 << RANDOM_BITS) as f64;
        // The float product is exact enough: it only places the cut among
        // 2^56 values, and the two ends (0.0 and 1.0) come out exactly.
        let threshold = ((1.0 - ratio) * scale).round() as u64;
        Self { threshold }
    }

    /// Whether a trace with this id is kept.
    pub fn keeps(&self, trace_id: TraceId) -> bool {
        let randomness = u128::from_be_bytes(trace_id.to_bytes()) as u64 & RANDOM_MASK;
        randomness >= self.threshold
    }
}

impl ShouldSample for TicketRatioSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let decision = if self.keeps(trace_id) {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: parent_context
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UUIDv7-shaped ids (48-bit time, version 7, variant 10, random rest)
    /// from a fixed splitmix64 sequence, so the test is reproducible.
    fn uuid_v7_like(n: usize) -> Vec<TraceId> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|i| {
                let millis = 1_700_000_000_000_u128 + i as u128;
                let high = (millis << 80) | (0x7 << 76) | (u128::from(next() & 0xfff) << 64);
                let low = (u128::from(next()) & !(0b11 << 62)) | (0b10 << 62);
                TraceId::from(high | low)
            })
            .collect()
    }

    #[test]
    fn keeps_about_the_ratio_of_uuid_v7_trace_ids() {
        let ids = uuid_v7_like(20_000);
        for ratio in [0.01, 0.1, 0.5, 0.9] {
            let sampler = TicketRatioSampler::new(ratio);
            let kept =
                ids.iter().filter(|id| sampler.keeps(**id)).count() as f64 / ids.len() as f64;
            assert!((kept - ratio).abs() < 0.02, "ratio {ratio} kept {kept}");
        }
    }

    #[test]
    fn zero_keeps_nothing_and_one_keeps_everything() {
        let ids = uuid_v7_like(1_000);
        let none = TicketRatioSampler::new(0.0);
        let all = TicketRatioSampler::new(1.0);
        assert!(ids.iter().all(|id| !none.keeps(*id)));
        assert!(ids.iter().all(|id| all.keeps(*id)));
        assert!(
            !none.keeps(TraceId::from(u128::MAX)),
            "the largest randomness must still be dropped at 0"
        );
    }

    #[test]
    fn a_lower_ratio_keeps_a_subset_of_a_higher_one() {
        // Consistency: a region sampling at 10% keeps only tickets that a
        // region sampling at 50% keeps too.
        let (low, high) = (TicketRatioSampler::new(0.1), TicketRatioSampler::new(0.5));
        assert!(
            uuid_v7_like(5_000)
                .iter()
                .all(|id| !low.keeps(*id) || high.keeps(*id))
        );
    }
}
