//! Latency percentiles and throughput.
//!
//! Throughput of the runtime scenarios is measured on the egress side, over
//! the records' own append times: the results after the first one, divided by
//! the time from the first result to the last. Results leave in bursts, one
//! per committed epoch, so this "egress span" rate does not depend on when the
//! driver happens to poll, and it leaves out the start-up delay (the first
//! epochs' commit latency), which would otherwise weigh on runs of a few seconds.

/// The `p`-th percentile (0–100) by nearest rank; `None` without samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency samples in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<f64>,
}

impl Latencies {
    pub fn push(&mut self, ms: f64) {
        self.samples.push(ms);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// p50 and p99.
    pub fn p50_p99(&mut self) -> (Option<f64>, Option<f64>) {
        self.samples.sort_by(f64::total_cmp);
        (percentile(&self.samples, 50.0), percentile(&self.samples, 99.0))
    }

    pub fn summary(&mut self) -> serde_json::Value {
        self.samples.sort_by(f64::total_cmp);
        let p = |q| percentile(&self.samples, q);
        serde_json::json!({
            "count": self.samples.len(),
            "p50_ms": p(50.0), "p90_ms": p(90.0), "p99_ms": p(99.0),
            "max_ms": self.samples.last(),
        })
    }
}

/// Messages per second over the egress timestamps (milliseconds) of a run's results.
pub fn egress_span_rate(timestamps: &[i64]) -> Option<f64> {
    let first = *timestamps.iter().min()?;
    let last = *timestamps.iter().max()?;
    let after_first = timestamps.iter().filter(|t| **t > first).count();
    if last <= first || after_first == 0 {
        return None;
    }
    Some(after_first as f64 * 1000.0 / (last - first) as f64)
}

/// Messages per second of a run whose progress was sampled as `(ms, count)`:
/// between the first samples at or past `low` and `high` (e.g. 10% and 90%
/// of the run's messages), so start-up and the tail stay out.
pub fn crossing_rate(samples: &[(i64, u64)], low: u64, high: u64) -> Option<f64> {
    let at_low = samples.iter().find(|s| s.1 >= low)?;
    let at_high = samples.iter().find(|s| s.1 >= high)?;
    if at_high.0 <= at_low.0 {
        return None;
    }
    Some((at_high.1 - at_low.1) as f64 * 1000.0 / (at_high.0 - at_low.0) as f64)
}

/// `concurrency` tasks each calling `call(n)` in a loop, `n` counting up across
/// them, until `duration` is over; the latency of every call in milliseconds.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: std::time::Duration,
    call: F,
) -> anyhow::Result<Latencies>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (call, next) = (call.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Latencies::default();
            while Instant::now() < deadline {
                let start = Instant::now();
                call(next.fetch_add(1, Ordering::Relaxed)).await?;
                latencies.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.map_err(|e| anyhow::anyhow!("a request task: {e}"))??);
    }
    Ok(all)
}

/// Calls `call(n)` `rate` times per second for `duration`, each call in a task
/// of its own (an open loop), `n` counting up; the latency of every call in
/// milliseconds, from its scheduled start (a call started late by a busy
/// scheduler counts its wait, as an arrival in a queue would).
pub async fn paced<F, Fut>(rate: f64, duration: std::time::Duration, call: F) -> anyhow::Result<Latencies>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    use std::time::Duration;
    use tokio::time::Instant;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0.. {
        let at = start + period.mul_f64(n as f64);
        if at.duration_since(start) >= duration {
            break;
        }
        tokio::time::sleep_until(at).await;
        let call = call(n);
        tasks.spawn(async move {
            call.await?;
            anyhow::Ok(at.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let mut all = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        all.push(joined.map_err(|e| anyhow::anyhow!("a request task: {e}"))??);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paced_loop_does_not_wait_for_the_calls_before() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        // Each call outlasts the whole phase: a loop that waited for answers would make one.
        let latencies = paced(100.0, std::time::Duration::from_millis(200), move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                Ok(())
            }
        })
        .await
        .expect("paced calls");
        assert_eq!(started.load(Ordering::Relaxed), 20, "one call per 10 ms for 200 ms");
        assert_eq!(latencies.len(), 20, "every call's latency");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50.0));
        assert_eq!(percentile(&sorted, 99.0), Some(99.0));
        assert_eq!(percentile(&sorted, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_egress_span_rate_counts_what_came_after_the_first_burst() {
        // Bursts of 10 results every 100 ms: 30 results after the first burst in 300 ms.
        let ts: Vec<i64> = (0..4).flat_map(|b| std::iter::repeat_n(1_000 + b * 100, 10)).collect();
        assert_eq!(egress_span_rate(&ts), Some(100.0));
        assert_eq!(egress_span_rate(&[5, 5]), None);
    }

    #[test]
    fn the_crossing_rate_is_taken_between_the_thresholds() {
        let samples: Vec<(i64, u64)> = (0..=100).map(|t| (t * 10, (t as u64).saturating_sub(10) * 50)).collect();
        // 50 messages per 10 ms once started: 5,000 per second.
        assert_eq!(crossing_rate(&samples, 500, 4_000), Some(5_000.0));
        assert_eq!(crossing_rate(&samples, 500, 1_000_000), None);
    }
}
