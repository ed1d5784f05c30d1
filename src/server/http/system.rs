//! `GET /system`: process and host resources — CPU, memory, threads — from
//! `sysinfo`. GPU figures are only attempted with `STT_ENABLE_GPU_METRICS=1`
//! and report why they are absent (this build has no NVML binding).

use std::sync::Mutex;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::AppState;

/// One `System` kept between requests: CPU usage is a difference between
/// two refreshes, so a fresh `System` per request would always say 0.
pub struct SystemProbe {
    sys: Mutex<System>,
}

impl Default for SystemProbe {
    fn default() -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        Self {
            sys: Mutex::new(sys),
        }
    }
}

impl SystemProbe {
    /// A snapshot of the host and this process.
    pub fn snapshot(&self) -> Value {
        let mut sys = self.sys.lock().unwrap_or_else(|e| e.into_inner());
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        let pid = Pid::from_u32(std::process::id());
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let process = sys.process(pid).map(|p| {
            json!({
                "pid": pid.as_u32(),
                "cpu_percent": p.cpu_usage(),
                "rss_bytes": p.memory(),
                "virtual_bytes": p.virtual_memory(),
                "threads": thread_count(),
            })
        });
        json!({
            "process": process,
            "host": {
                "cpus": sys.cpus().len(),
                "cpu_percent": sys.global_cpu_usage(),
                "memory_total_bytes": sys.total_memory(),
                "memory_used_bytes": sys.used_memory(),
                "load_average": {
                    "one": System::load_average().one,
                    "five": System::load_average().five,
                    "fifteen": System::load_average().fifteen,
                },
            },
            "gpu": gpu(),
        })
    }
}

/// Threads of this process (Linux: entries of /proc/self/task).
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

fn gpu() -> Value {
    let enabled = std::env::var(crate::env::ENV_ENABLE_GPU_METRICS)
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !enabled {
        return json!({"enabled": false});
    }
    json!({"enabled": true, "available": false, "reason": "this build has no NVML binding"})
}

pub async fn system(State(s): State<AppState>) -> Json<Value> {
    let probe = s.system.clone();
    // sysinfo reads /proc: keep it off the async workers.
    let snap = tokio::task::spawn_blocking(move || probe.snapshot())
        .await
        .unwrap_or_else(|_| json!({"error": "system probe failed"}));
    Json(snap)
}
