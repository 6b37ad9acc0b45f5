//! What the figures were measured on.

use std::path::Path;

use serde_json::{Value, json};

pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub mem_gib: f64,
    pub kernel: String,
    /// Filesystem type of the scratch directory (`ext4`, `tmpfs`, ...).
    pub fs_type: String,
    /// Its device, from /proc/mounts.
    pub device: String,
    pub loadavg_start: String,
}

pub fn describe(dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| crate::stats::round(kb / 1024.0 / 1024.0, 1));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    let (fs_type, device) = mount_of(dir);
    Machine {
        cpu,
        cpus,
        mem_gib,
        kernel,
        fs_type,
        device,
        loadavg_start: loadavg(),
    }
}

impl Machine {
    pub fn to_json(&self, loadavg_end: &str) -> Value {
        json!({
            "cpu": self.cpu,
            "cpus": self.cpus,
            "mem_gib": self.mem_gib,
            "kernel": self.kernel,
            "fs_type": self.fs_type,
            "device": self.device,
            "blake3_native_simd": native_simd(),
            "loadavg_start": self.loadavg_start,
            "loadavg_end": loadavg_end,
        })
    }
}

/// The 1, 5 and 15 minute load averages: how busy the shared machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The filesystem type and device of the mount holding `dir` (the longest
/// mount point that is a prefix of its canonical path).
fn mount_of(dir: &Path) -> (String, String) {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, point, fs_type, ..] = fields[..] else {
            continue;
        };
        if canonical.starts_with(point)
            && best.as_ref().is_none_or(|(len, _, _)| point.len() >= *len)
        {
            best = Some((point.len(), fs_type.to_string(), device.to_string()));
        }
    }
    best.map_or(
        ("unknown".to_string(), "unknown".to_string()),
        |(_, t, d)| (t, d),
    )
}

/// The widest SIMD the native `blake3` crate picks at run time on this CPU.
pub fn native_simd() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "avx2";
        }
        if std::arch::is_x86_feature_detected!("sse4.1") {
            return "sse4.1";
        }
        "sse2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "portable"
    }
}
