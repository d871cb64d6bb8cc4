//! Latency histograms a service keeps and sends over its socket: cheap to
//! record into from any thread, small on the wire, and subtractable, so
//! that an observer can take one before a run and one after and read the
//! run's own quantiles ([`Histogram::since`]).
//!
//! Buckets are in microseconds, log-linear: one per microsecond below 64 µs,
//! then 32 per doubling (each bucket at most 1/32 of its lower bound wide,
//! so a quantile is within ~1.6% of the true value).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Below this many microseconds every bucket is one microsecond wide.
const EXACT_BELOW_US: u64 = 64;
/// log2 of [`EXACT_BELOW_US`].
const EXACT_BITS: u32 = 6;
/// Buckets per doubling above [`EXACT_BELOW_US`] (a power of two).
const PER_DOUBLING: u64 = 32;
/// log2 of [`PER_DOUBLING`].
const PER_DOUBLING_BITS: u32 = 5;
/// Enough buckets for any `u64` of microseconds.
const BUCKETS: usize = (EXACT_BELOW_US + PER_DOUBLING * (64 - EXACT_BITS as u64)) as usize;

/// The bucket holding `us` microseconds.
fn bucket_of(us: u64) -> usize {
    if us < EXACT_BELOW_US {
        return us as usize;
    }
    let doubling = 63 - us.leading_zeros(); // >= EXACT_BITS
    let within = (us >> (doubling - PER_DOUBLING_BITS)) & (PER_DOUBLING - 1);
    (EXACT_BELOW_US + u64::from(doubling - EXACT_BITS) * PER_DOUBLING + within) as usize
}

/// The microseconds bucket `b` covers: `lower..lower + width`.
fn bucket_range(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < EXACT_BELOW_US {
        return (b, 1);
    }
    let doubling = (b - EXACT_BELOW_US) / PER_DOUBLING + u64::from(EXACT_BITS);
    let within = (b - EXACT_BELOW_US) % PER_DOUBLING;
    let width = 1u64 << (doubling - u64::from(PER_DOUBLING_BITS));
    ((PER_DOUBLING + within) * width, width)
}

/// A snapshot of a [`LiveHistogram`]: the non-empty buckets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// (bucket, how many samples fell in it), bucket order, no zero counts.
    buckets: Vec<(u16, u64)>,
}

impl Histogram {
    /// How many samples it holds.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// The `q`-quantile (0.5: the median), to within one bucket (the
    /// bucket's middle); `None` if there are no samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the sample wanted, 1-based: at least the first.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let (lower, width) = bucket_range(usize::from(bucket));
                // Exact buckets name their value; wider ones their middle.
                let micros = if width == 1 { lower } else { lower + width / 2 };
                return Some(Duration::from_micros(micros));
            }
        }
        unreachable!("the rank is at most the count")
    }

    /// The samples recorded after `earlier` was taken from the same
    /// histogram. A bucket that shrank (the service restarted in between)
    /// counts as empty.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before: std::collections::HashMap<u16, u64> = earlier.buckets.iter().copied().collect();
        Histogram {
            buckets: self
                .buckets
                .iter()
                .filter_map(|&(b, n)| {
                    let n = n.saturating_sub(before.get(&b).copied().unwrap_or(0));
                    (n > 0).then_some((b, n))
                })
                .collect(),
        }
    }
}

/// A histogram being recorded into; shared between threads by reference.
pub struct LiveHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LiveHistogram {
    fn default() -> Self {
        LiveHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for LiveHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHistogram")
            .field("count", &self.snapshot().count())
            .finish()
    }
}

impl LiveHistogram {
    /// Counts one sample (anything over `u64::MAX` µs counts as that).
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// What it holds now. Samples recorded meanwhile may or may not be in it.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter_map(|(b, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((b as u16, n))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_the_bucket_that_covers_it() {
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((6..64).flat_map(|p| {
            let v = 1u64 << p;
            [v - 1, v, v + 1, v + v / 3]
        }));
        values.push(u64::MAX);
        for v in values {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v} µs: bucket {b} out of range");
            let (lower, width) = bucket_range(b);
            assert!(
                lower <= v && v - lower < width,
                "{v} µs in bucket {b} = {lower}+{width}"
            );
            // Narrow enough for the stated precision.
            assert!(
                width == 1 || width * PER_DOUBLING <= lower,
                "{v}: {width} wide at {lower}"
            );
        }
        // Buckets are contiguous: each starts where the one before ends.
        for b in 1..BUCKETS {
            let (prev, prev_width) = bucket_range(b - 1);
            assert_eq!(bucket_range(b).0, prev + prev_width, "bucket {b}");
        }
    }

    #[test]
    fn quantiles_come_from_the_samples_and_a_later_snapshot_minus_an_earlier_one_is_the_run_between()
     {
        let live = LiveHistogram::default();
        assert_eq!(live.snapshot().quantile(0.5), None);
        for us in [10, 20, 30] {
            live.record(Duration::from_micros(us));
        }
        let before = live.snapshot();
        assert_eq!(before.quantile(0.5), Some(Duration::from_micros(20)));
        for _ in 0..99 {
            live.record(Duration::from_micros(1000));
        }
        live.record(Duration::from_micros(5000));
        let after = live.snapshot();
        assert_eq!(after.count(), 103);
        let run = after.since(&before);
        assert_eq!(run.count(), 100);
        // 1000 µs lies in a 16 µs bucket starting at 992: its middle is 1000.
        assert_eq!(run.quantile(0.5), Some(Duration::from_micros(1000)));
        assert_eq!(run.quantile(0.0), Some(Duration::from_micros(1000)));
        let top = run.quantile(1.0).unwrap().as_micros() as u64;
        assert!((4992..=5120).contains(&top), "max {top} µs");
        // A restarted service's smaller counts do not go negative.
        assert_eq!(before.since(&after).count(), 0);
    }
}
