//! outcome (interim: replaced by the outcome branch when it lands)

pub mod stats {
    pub fn wilson_interval(successes: u64, n: u64, z: f64) -> (f64, f64) {
        if n == 0 {
            return (0.0, 1.0);
        }
        let n = n as f64;
        let p = successes as f64 / n;
        let d = 1.0 + z * z / n;
        let c = (p + z * z / (2.0 * n)) / d;
        let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
        ((c - h).max(0.0), (c + h).min(1.0))
    }
    pub fn median(v: &[f64]) -> Option<f64> {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        (n > 0).then(|| {
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub kind: String,
    pub title: String,
    pub signature: String,
    pub expected: bool,
}

#[derive(Debug, Default)]
pub struct ClassifyContext {
    pub expected_fs_errors: bool,
    pub expected_panic: bool,
    pub ignore: Vec<regex::Regex>,
}

pub fn classify_records(_r: &[crashrig_guest::KmsgRecord], _c: &ClassifyContext) -> Vec<Finding> {
    Vec::new()
}

pub fn classify_console(_t: &str, _c: &ClassifyContext) -> Vec<Finding> {
    Vec::new()
}
