//! Reading the services' figures in tests and benchmarks: Prometheus
//! samples from `/metrics`, and a process's peak memory and CPU time.

/// The sum of every sample of `name` (all label sets) in a Prometheus text
/// page. `name` may include a label selector prefix, e.g.
/// `foo_total{reason="x"}`.
pub fn sample_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty float sum is -0.0, which prints as "-0".
        + 0.0
}

/// GETs `http://<addr>/metrics`; `None` if unreachable.
pub async fn page(addr: impl std::fmt::Display) -> Option<String> {
    let res = reqwest::get(format!("http://{addr}/metrics")).await.ok()?;
    Some(res.text().await.unwrap_or_default())
}

/// GETs `http://<addr>/metrics` and sums `name`; NaN if unreachable.
pub async fn scrape(addr: impl std::fmt::Display, name: &str) -> f64 {
    page(addr)
        .await
        .map_or(f64::NAN, |page| sample_sum(&page, name))
}

/// Peak resident memory in MiB (VmHWM) and CPU seconds (user + system) of
/// process `pid`, from /proc.
pub fn process_stats(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses); utime
    // and stime are fields 14 and 15, i.e. 11 and 12 after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (hwm_kib / 1024.0, (ticks(11) + ticks(12)) / 100.0)
}

/// The `p` quantile (0 to 1) of `sorted` (ascending) by nearest rank: the
/// smallest value with at least `p` of the values at or below it. NaN when
/// empty. One definition for every benchmark's percentiles.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_across_labels_and_matches_whole_names() {
        let page = "# HELP x\nfoo_total{a=\"1\"} 2\nfoo_total{a=\"2\"} 3\nfoo_total_other 100\nfoo_total 1\n";
        assert_eq!(sample_sum(page, "foo_total"), 6.0);
        assert_eq!(sample_sum(page, "foo_total{a=\"2\"}"), 3.0);
        assert_eq!(sample_sum(page, "missing"), 0.0);
        assert!(sample_sum(page, "missing").is_sign_positive(), "not -0");
    }

    #[test]
    fn reads_this_process() {
        // Burn some CPU so a misread /proc/<pid>/stat field (which reads
        // as 0) shows.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (rss, cpu) = process_stats(std::process::id());
        assert!(rss > 0.0, "peak RSS {rss}");
        assert!(cpu > 0.0, "CPU seconds {cpu}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
