//! Helpers shared by the node's integration tests.
#![allow(dead_code, reason = "each test file uses a subset")]

/// The value of the unlabelled sample `name` in an OpenMetrics rendering.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not rendered:\n{text}"))
        .parse()
        .unwrap()
}

/// `node`'s metrics once the sample `name` satisfies `accept` (some counters move in tasks
/// that watch the engine), polled up to 10 s.
pub async fn metrics_when(node: &keel::Node, name: &str, accept: impl Fn(f64) -> bool) -> String {
    let poll = async {
        loop {
            let text = node.metrics_text().unwrap();
            if accept(sample(&text, name)) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), poll)
        .await
        .unwrap_or_else(|_| panic!("{name} never accepted"))
}
