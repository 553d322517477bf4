//! What a daemon counts, in Prometheus' text format (`--metrics-addr`):
//! operations by kind and result, their latency, guest calls stopped by
//! the sandbox (deadline, memory, panic, trap), and the store's size.
//! Labels come from closed sets (the plugin API's method names, result
//! classes, trap reasons, installed drivers), so no client can grow them.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stopped {
    driver: String,
    reason: String,
}

type Latency = Family<Kind, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    operations: Family<Operation, Counter>,
    latency: Latency,
    stopped: Family<Stopped, Counter>,
    store_bytes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("netshim");
        let operations = Family::<Operation, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        let stopped = Family::<Stopped, Counter>::default();
        let store_bytes = Gauge::default();
        registry.register(
            "operations",
            "Requests answered, by kind (the plugin API method) and result (2xx, 4xx, 5xx)",
            operations.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Time to answer a request, by kind",
            latency.clone(),
        );
        registry.register(
            "guest_stopped",
            "Guest calls the sandbox stopped, by driver and reason (deadline, memory, panic, trap)",
            stopped.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes of the state database and its write-ahead log",
            store_bytes.clone(),
        );
        Metrics {
            registry,
            operations,
            latency,
            stopped,
            store_bytes,
        }
    }

    /// One answered request. `kind` must come from a closed set.
    pub fn operation(&self, kind: &str, status: u16, took: Duration) {
        let result = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.operations
            .get_or_create(&Operation {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        self.latency
            .get_or_create(&Kind { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// A guest call the sandbox stopped.
    pub fn stopped(&self, driver: &str, reason: &str) {
        self.stopped
            .get_or_create(&Stopped {
                driver: driver.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// The text exposition, with the store's size as of now.
    pub fn render(&self, store_bytes: u64) -> String {
        self.store_bytes
            .set(i64::try_from(store_bytes).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_exposition() {
        let m = Metrics::new();
        m.operation("IpamDriver.RequestPool", 200, Duration::from_millis(3));
        m.operation("IpamDriver.RequestPool", 500, Duration::from_millis(1));
        m.stopped("hostile", "deadline");
        let text = m.render(4096);
        for line in [
            r#"netshim_operations_total{kind="IpamDriver.RequestPool",result="2xx"} 1"#,
            r#"netshim_operations_total{kind="IpamDriver.RequestPool",result="5xx"} 1"#,
            r#"netshim_guest_stopped_total{driver="hostile",reason="deadline"} 1"#,
            "netshim_store_bytes 4096",
            r#"netshim_operation_duration_seconds_count{kind="IpamDriver.RequestPool"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
