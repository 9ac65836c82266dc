//! Prometheus text exposition format (version 0.0.4), written by hand: a handful of counters
//! and gauges needs no client library.

use std::fmt::Write;

/// Accumulates metric families into one exposition text.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Exposition::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        let _ = writeln!(self.text, "{name}{labels} {value}");
    }

    /// A counter without labels (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.header(name, help, "counter");
        #[allow(clippy::cast_precision_loss)]
        self.sample(name, &[], value as f64);
        self
    }

    /// A counter with one sample per label set.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Vec<(&str, String)>, u64)],
    ) -> &mut Self {
        self.header(name, help, "counter");
        for (labels, value) in samples {
            #[allow(clippy::cast_precision_loss)]
            self.sample(name, labels, *value as f64);
        }
        self
    }

    /// A gauge with one sample per label set.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Vec<(&str, String)>, f64)],
    ) -> &mut Self {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
        self
    }

    /// A histogram from cumulative-able bucket counts (`counts[i]` for `le = bounds[i]`, the last
    /// count above every bound) and the sum.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) -> &mut Self {
        self.header(name, help, "histogram");
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
            #[allow(clippy::cast_precision_loss)]
            self.sample(&format!("{name}_bucket"), &[("le", le)], cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), &[], sum);
        #[allow(clippy::cast_precision_loss)]
        self.sample(&format!("{name}_count"), &[], cumulative as f64);
        self
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format() {
        let mut e = Exposition::new();
        e.counter("trades_total", "Trades.", 3)
            .gauge(
                "lag",
                "Lag.",
                &[
                    (vec![("partition", "0".into())], 5.0),
                    (vec![("partition", "a\"b".into())], 1.5),
                ],
            )
            .histogram("latency_ms", "Latency.", &[10.0, 100.0], &[1, 2, 3], 250.0);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP trades_total Trades.\n# TYPE trades_total counter\ntrades_total 3\n\
             # HELP lag Lag.\n# TYPE lag gauge\nlag{partition=\"0\"} 5\nlag{partition=\"a\\\"b\"} 1.5\n\
             # HELP latency_ms Latency.\n# TYPE latency_ms histogram\nlatency_ms_bucket{le=\"10\"} 1\n\
             latency_ms_bucket{le=\"100\"} 3\nlatency_ms_bucket{le=\"+Inf\"} 6\nlatency_ms_sum 250\nlatency_ms_count 6\n"
        );
    }
}
