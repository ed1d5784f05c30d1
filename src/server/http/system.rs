//! `GET /system`: process and host resources — CPU, memory, threads, open
//! files — from `sysinfo` and /proc. GPU figures come from NVML (`nvml-wrapper`, which loads
//! `libnvidia-ml.so` at run time, so the binary has no NVIDIA dependency) and
//! are only attempted with `STT_ENABLE_GPU_METRICS=1`; without a driver the
//! section says why it is empty.

use std::sync::{Mutex, OnceLock};

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
                "open_fds": open_fds(),
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
    count_entries("/proc/self/task")
}

/// Open file descriptors of this process (Linux: entries of /proc/self/fd):
/// sockets, model files, logs. A count that only grows is a leak.
fn open_fds() -> Option<usize> {
    count_entries("/proc/self/fd")
}

/// Entries of a /proc directory; `None` off Linux.
fn count_entries(dir: &str) -> Option<usize> {
    std::fs::read_dir(dir).ok().map(|d| d.count())
}

fn gpu() -> Value {
    let enabled = std::env::var(crate::env::ENV_ENABLE_GPU_METRICS)
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !enabled {
        return json!({"enabled": false});
    }
    // Loading the library and initialising NVML costs tens of ms: once.
    static NVML: OnceLock<Result<nvml_wrapper::Nvml, String>> = OnceLock::new();
    let nvml = match NVML.get_or_init(|| nvml_wrapper::Nvml::init().map_err(|e| e.to_string())) {
        Ok(n) => n,
        Err(why) => {
            return json!({
                "enabled": true,
                "available": false,
                "reason": format!("NVML unavailable (no NVIDIA driver?): {why}"),
            })
        }
    };
    let count = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => return json!({"enabled": true, "available": false, "reason": e.to_string()}),
    };
    let devices: Vec<Value> = (0..count)
        .map(|i| match nvml.device_by_index(i) {
            Ok(d) => {
                use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
                let util = d.utilization_rates().ok();
                let mem = d.memory_info().ok();
                json!({
                    "index": i,
                    "name": d.name().ok(),
                    "utilization_percent": util.as_ref().map(|u| u.gpu),
                    "memory_utilization_percent": util.as_ref().map(|u| u.memory),
                    "memory_used_bytes": mem.as_ref().map(|m| m.used),
                    "memory_total_bytes": mem.as_ref().map(|m| m.total),
                    "temperature_c": d.temperature(TemperatureSensor::Gpu).ok(),
                    "power_watts": d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                })
            }
            Err(e) => json!({"index": i, "error": e.to_string()}),
        })
        .collect();
    json!({"enabled": true, "available": true, "devices": devices})
}

pub async fn system(State(s): State<AppState>) -> Json<Value> {
    let probe = s.system.clone();
    // sysinfo reads /proc: keep it off the async workers.
    let snap = tokio::task::spawn_blocking(move || probe.snapshot())
        .await
        .unwrap_or_else(|_| json!({"error": "system probe failed"}));
    Json(snap)
}
