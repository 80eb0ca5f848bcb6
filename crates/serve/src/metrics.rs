//! Service metrics in the Prometheus text exposition format (version 0.0.4), written by hand:
//! requests by route and status, request latency, batch sizes, forward-pass time, queue depth,
//! requests in flight and caught panics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds.
const LATENCY_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Batch-size buckets in images.
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Decrements the in-flight gauge when dropped.
pub struct InflightGuard<'a>(&'a AtomicI64);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All counters of one server.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    batches: Mutex<BTreeMap<String, Histogram>>,
    forward: Mutex<BTreeMap<String, Histogram>>,
    inflight: AtomicI64,
    panics: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful whatever panicked while holding the lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Records one answered request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests).entry((route.to_string(), status)).or_default() += 1;
        lock(&self.latency).entry(route.to_string()).or_insert_with(|| Histogram::new(LATENCY_BOUNDS)).observe(elapsed.as_secs_f64());
    }

    /// Records one forward pass of `images` images that took `elapsed`.
    pub fn batch(&self, model: &str, images: usize, elapsed: Duration) {
        lock(&self.batches).entry(model.to_string()).or_insert_with(|| Histogram::new(BATCH_BOUNDS)).observe(images as f64);
        lock(&self.forward).entry(model.to_string()).or_insert_with(|| Histogram::new(LATENCY_BOUNDS)).observe(elapsed.as_secs_f64());
    }

    /// Counts a request in flight until the guard is dropped (also when the request is abandoned).
    pub fn count_inflight(&self) -> InflightGuard<'_> {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(&self.inflight)
    }

    /// Counts a caught panic.
    pub fn panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `queues` gives each model's (images waiting for a forward pass, images admitted).
    pub fn render(&self, queues: &[(String, usize, usize)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP petal_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE petal_http_requests_total counter\n");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(out, "petal_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
        out.push_str("# HELP petal_http_request_duration_seconds Time from request headers to the answer, by route.\n");
        out.push_str("# TYPE petal_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            h.render(&mut out, "petal_http_request_duration_seconds", &format!("route=\"{}\"", escape(route)));
        }
        out.push_str("# HELP petal_batch_size_images Images per forward pass, by model.\n");
        out.push_str("# TYPE petal_batch_size_images histogram\n");
        for (model, h) in lock(&self.batches).iter() {
            h.render(&mut out, "petal_batch_size_images", &format!("model=\"{}\"", escape(model)));
        }
        out.push_str("# HELP petal_forward_duration_seconds Time of one forward pass, by model.\n");
        out.push_str("# TYPE petal_forward_duration_seconds histogram\n");
        for (model, h) in lock(&self.forward).iter() {
            h.render(&mut out, "petal_forward_duration_seconds", &format!("model=\"{}\"", escape(model)));
        }
        out.push_str("# HELP petal_queue_depth_images Images queued and waiting for a forward pass, by model.\n");
        out.push_str("# TYPE petal_queue_depth_images gauge\n");
        for (model, depth, _) in queues {
            let _ = writeln!(out, "petal_queue_depth_images{{model=\"{}\"}} {depth}", escape(model));
        }
        out.push_str("# HELP petal_admitted_images Images admitted and not yet answered (decoding, queued or in a forward pass; bounded by --queue), by model.\n");
        out.push_str("# TYPE petal_admitted_images gauge\n");
        for (model, _, admitted) in queues {
            let _ = writeln!(out, "petal_admitted_images{{model=\"{}\"}} {admitted}", escape(model));
        }
        out.push_str("# HELP petal_requests_in_flight Prediction requests being read, decoded or predicted.\n");
        out.push_str("# TYPE petal_requests_in_flight gauge\n");
        let _ = writeln!(out, "petal_requests_in_flight {}", self.inflight.load(Ordering::Relaxed));
        out.push_str("# HELP petal_panics_total Panics caught inside request work (each answered 500).\n");
        out.push_str("# TYPE petal_panics_total counter\n");
        let _ = writeln!(out, "petal_panics_total {}", self.panics.load(Ordering::Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.batch("a\"b", 1, Duration::from_millis(3));
        m.batch("a\"b", 3, Duration::from_millis(30));
        m.batch("a\"b", 300, Duration::from_millis(300));
        let text = m.render(&[("a\"b".into(), 7, 9)]);
        assert!(text.contains("petal_batch_size_images_bucket{model=\"a\\\"b\",le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("petal_batch_size_images_bucket{model=\"a\\\"b\",le=\"4\"} 2\n"), "{text}");
        assert!(text.contains("petal_batch_size_images_bucket{model=\"a\\\"b\",le=\"128\"} 2\n"), "{text}");
        assert!(text.contains("petal_batch_size_images_bucket{model=\"a\\\"b\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("petal_batch_size_images_sum{model=\"a\\\"b\"} 304\n"), "{text}");
        assert!(text.contains("petal_queue_depth_images{model=\"a\\\"b\"} 7\n"), "{text}");
        assert!(text.contains("petal_admitted_images{model=\"a\\\"b\"} 9\n"), "{text}");
    }
}
