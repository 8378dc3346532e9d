//! The standard `process_*` metrics (CPU seconds, resident memory, open descriptors, start
//! time) that every Prometheus exporter offers and dashboards expect, read from /proc at
//! scrape time. prometheus-client has no process collector, so they are written here in
//! the text format, after the registry's own.

use std::fmt::Write;

/// The metric families, or nothing where /proc cannot be read.
pub fn render() -> String {
    let mut out = String::new();
    let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok() else {
        return out;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return out;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // man 5 proc: utime is field 14, stime 15, starttime 22, vsize 23, rss 24; `rest`
    // starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        }
    };
    let cpu = field(14).zip(field(15)).map(|(u, s)| (u + s) / ticks);
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu,
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        field(24).map(|p| p * page),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        field(23),
    );
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        boot.zip(field(22)).map(|(b, start)| b + start / ticks),
    );
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        fds,
    );
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds,
    );
    out
}
