//! Tracking search at scale (issue 5): generates a year of tracking records (JSONL files and
//! the SQLite index, as markgate writes them) and times sender searches against the index.
//!
//!   MARKGATE_BENCH_RECORDS=18000000 cargo bench --bench tracking
//!
//! Defaults to 1,000,000 records (50,000 a day, 5,000 senders). Prints the time per search
//! at this size and at a tenth of it, so the figure that counts is the ratio.

use std::io::Write;
use std::time::{Duration, Instant};

use markgate::store::files::index::{Index, Query};

fn generate(dir: &std::path::Path, n: usize) -> Index {
    let mut index = Index::open(dir).expect("index");
    let per_day = 50_000;
    let mut written = 0;
    let mut day = 0;
    while written < n {
        let name = format!(
            "tracking-2026-{:02}-{:02}.jsonl",
            day / 28 % 12 + 1,
            day % 28 + 1
        );
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(dir.join(&name)).expect("file"));
        let mut batch = Vec::with_capacity(per_day);
        let mut offset = 0u64;
        for i in 0..per_day.min(n - written) {
            let k = written + i;
            let record = serde_json::json!({
                "time": format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", day / 28 % 12 + 1, day % 28 + 1, (i / 60) % 24, i % 60),
                "queue_id": format!("{k:016X}"),
                "message_id": format!("<{k}@police.cjsm.net>"),
                "sender": format!("user{}@police.cjsm.net", k % 5000),
                "recipients": [{"address": format!("r{}@cps.cjsm.net", k % 20000), "class": "cjsm"}],
                "action": if k % 10 == 0 { "quarantine" } else { "pass" },
                "rule": null,
                "marking": {"level": "RESTRICTED"},
            });
            let mut line = serde_json::to_vec(&record).expect("json");
            line.push(b'\n');
            file.write_all(&line).expect("write");
            batch.push((record, offset));
            offset += line.len() as u64;
        }
        file.flush().expect("flush");
        index
            .add_batch(batch.iter().map(|(r, o)| (r, name.as_str(), *o)))
            .expect("index batch");
        written += batch.len();
        day += 1;
    }
    index
}

fn time_searches(index: &Index, senders: usize) -> Duration {
    let mut times = Vec::new();
    for s in 0..senders {
        let q = Query {
            sender: Some(markgate::store::AddressMatch::parse(&format!(
                "user{}@police.cjsm.net",
                s * 997 % 5000
            ))),
            ..Query::default()
        };
        let started = Instant::now();
        let found = index.search(&q).expect("search");
        times.push(started.elapsed());
        assert!(!found.is_empty());
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let n: usize = std::env::var("MARKGATE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for size in [n / 10, n] {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let index = generate(dir.path(), size);
        let built = started.elapsed();
        let median = time_searches(&index, 21);
        println!(
            "{size:>10} records (built in {built:.1?}): sender search median {median:.2?} for ~{} records each",
            size / 5000
        );
    }
}
