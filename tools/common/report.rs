//! The JSON summary helpers both load tools use (tools/rtmp-load, tools/rtc-load):
//! the tool's own CPU time, nearest-rank percentiles, rounding. Included by each
//! with `#[path = "../../common/report.rs"] mod report;` (they are separate cargo
//! packages with no library between them). std and serde_json only.

use serde_json::json;

/// (user, sys) CPU seconds of this process from /proc/self/stat (fields 14
/// and 15, in USER_HZ = 100 ticks per second on Linux).
pub fn cpu_times() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // After ")": field 3 is index 0, so utime (14) is 11 and stime (15) is 12.
    (tick(11), tick(12))
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `{"n", "p<q>" for each q in `qs` (percent), "max"}` of a sample, nearest rank;
/// `{"n": 0}` when it is empty.
pub fn percentiles(v: &[f64], qs: &[u32]) -> serde_json::Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let k = ((p / 100.0) * s.len() as f64).ceil() as usize;
        round3(s.get(k.saturating_sub(1).min(s.len() - 1)).copied().unwrap_or(0.0))
    };
    let mut m = serde_json::Map::new();
    m.insert("n".into(), json!(s.len()));
    for &q in qs {
        m.insert(format!("p{q}"), json!(rank(f64::from(q))));
    }
    m.insert("max".into(), json!(rank(100.0)));
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&v, &[50, 95, 99]), json!({"n": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}));
        assert_eq!(percentiles(&[2.0, 1.0], &[50]), json!({"n": 2, "p50": 1.0, "max": 2.0}));
        assert_eq!(percentiles(&[], &[50]), json!({"n": 0}));
        assert_eq!(round3(1.23456), 1.235);
    }
}
