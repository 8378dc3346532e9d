//! Tracking search at a year's scale (issue 26): generates tracking records as markgate
//! writes them — one JSONL file per real, consecutive day (as markgate names its daily
//! files), 50,000 records a day, the SQLite index beside them — then times searches through
//! the store (the path `track search` takes): by sender, by recipient, by Message-ID, and
//! by sender within one week. Every search's result count is checked against what was
//! generated; the bench fails (non-zero exit) on any mismatch.
//!
//!   MARKGATE_BENCH_RECORDS=18000000 cargo bench --bench tracking
//!   MARKGATE_BENCH_DIR=/var/tmp/mg-18m  (keep the generated store; reused when it matches)
//!
//! Defaults to 1,800,000 records (36 days). 5,000 senders and 20,000 recipients, so a
//! sender has N/5,000 records (3,600 at 18 M). Prints median and p95 per query kind, warm
//! and — where the page cache can be dropped (`/proc/sys/vm/drop_caches`, root) — cold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use markgate::store::files::index::Index;
use markgate::store::files::Tracking;
use markgate::store::record::{MarkingRecord, RecipientRecord, TrackingRecord};
use markgate::store::{AddressMatch, Query, TrackingStore};
use markgate::timefmt;

const PER_DAY: usize = 50_000;
const SENDERS: usize = 5_000;
const RECIPIENTS: usize = 20_000;
/// The first day: 2025-12-01T00:00:00Z.
const START: u64 = 1_764_547_200;

fn day_start(day: usize) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(START + day as u64 * 86_400)
}

/// Record `k` (0-based): its day is `k / PER_DAY`, spread over that day's seconds.
fn record(k: usize) -> TrackingRecord {
    let held = k.is_multiple_of(10);
    let day = k / PER_DAY;
    let second = (k % PER_DAY) as u64 * 86_400 / PER_DAY as u64;
    let time = day_start(day) + Duration::from_secs(second);
    TrackingRecord {
        time: timefmt::rfc3339(time),
        queue_id: Some(format!("{k:016X}")),
        front_end: Some("smtp".into()),
        sender: format!("user{}@police.cjsm.net", k % SENDERS),
        recipients: vec![RecipientRecord {
            address: format!("r{}@cps.cjsm.net", k % RECIPIENTS),
            class: Some("cjsm".into()),
        }],
        message_id: Some(format!("<{k}@police.cjsm.net>")),
        subject: Some(format!("[RESTRICTED] Case file {}", k % 100_000)),
        size: 10_240,
        marking: Some(MarkingRecord {
            level: "RESTRICTED".into(),
            rank: Some(2),
            ..MarkingRecord::default()
        }),
        signature: Some(true),
        confidentiality_statement: Some(true),
        action: if held { "quarantine" } else { "pass" }.into(),
        rule: held.then(|| "unmarked-to-external".to_string()),
        reply: Some("250 2.0.0 Ok".into()),
        outcome: if held { "held" } else { "delivered" }.into(),
        ..TrackingRecord::default()
    }
}

/// Writes `n` records (day files and index) into `dir`; returns the build time.
fn generate(dir: &Path, n: usize) -> Duration {
    let started = Instant::now();
    let mut index = Index::open(dir).expect("index");
    let mut written = 0;
    let mut day = 0;
    while written < n {
        let name = format!("tracking-{}.jsonl", timefmt::date(day_start(day)));
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(dir.join(&name)).expect("file"));
        let upto = (written + PER_DAY).min(n);
        for k in written..upto {
            let mut line = serde_json::to_vec(&record(k)).expect("json");
            line.push(b'\n');
            file.write_all(&line).expect("write");
        }
        file.flush().expect("flush");
        drop(file);
        // Indexed as markgate indexes: the indexer catches the index up from the file.
        index.catch_up_file(&name).expect("index");
        written = upto;
        day += 1;
    }
    started.elapsed()
}

/// Where the generated store lives: `MARKGATE_BENCH_DIR` (kept, reused when it holds `n`
/// records), else a temporary directory.
fn store_dir(n: usize) -> (PathBuf, Option<tempfile::TempDir>, Option<Duration>) {
    if let Ok(base) = std::env::var("MARKGATE_BENCH_DIR") {
        let dir = PathBuf::from(base).join(format!("records-{n}"));
        let marker = dir.join("complete");
        if marker.exists() {
            return (dir, None, None);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        let built = generate(&dir, n);
        std::fs::write(&marker, format!("{built:?}")).expect("marker");
        return (dir, None, Some(built));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let built = generate(tmp.path(), n);
    (tmp.path().to_path_buf(), Some(tmp), Some(built))
}

/// Drops the page cache; false where this machine does not allow it.
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

struct Kind {
    name: &'static str,
    queries: Vec<(Query, usize)>,
}

fn kinds(n: usize) -> Vec<Kind> {
    let days = n.div_ceil(PER_DAY);
    let count_mod = |modulus: usize, r: usize| (0..n).skip(r).step_by(modulus).count();
    let sender = |s: usize| Some(AddressMatch::parse(&format!("user{s}@police.cjsm.net")));
    let senders: Vec<usize> = (0..21).map(|i| i * 997 % SENDERS).collect();
    // One week in the middle of the span.
    let week_from = days / 2;
    let week_to = (week_from + 7).min(days);
    let in_week = |s: usize| {
        (week_from * PER_DAY..(week_to * PER_DAY).min(n))
            .filter(|k| k % SENDERS == s)
            .count()
    };
    vec![
        Kind {
            name: "sender",
            queries: senders
                .iter()
                .map(|&s| {
                    (
                        Query {
                            sender: sender(s),
                            ..Query::default()
                        },
                        count_mod(SENDERS, s),
                    )
                })
                .collect(),
        },
        Kind {
            name: "recipient",
            queries: (0..21)
                .map(|i| i * 7919 % RECIPIENTS)
                .map(|r| {
                    (
                        Query {
                            recipient: Some(AddressMatch::parse(&format!("r{r}@cps.cjsm.net"))),
                            ..Query::default()
                        },
                        count_mod(RECIPIENTS, r),
                    )
                })
                .collect(),
        },
        Kind {
            name: "message-id",
            queries: (0..101)
                .map(|i| (i * 104_729) % n)
                .map(|k| {
                    (
                        Query {
                            message_id: Some(format!("<{k}@police.cjsm.net>")),
                            ..Query::default()
                        },
                        1,
                    )
                })
                .collect(),
        },
        Kind {
            name: "sender, one week",
            queries: senders
                .iter()
                .map(|&s| {
                    (
                        Query {
                            sender: sender(s),
                            since: Some(timefmt::rfc3339(day_start(week_from))),
                            until: Some(timefmt::rfc3339(day_start(week_to))),
                            ..Query::default()
                        },
                        in_week(s),
                    )
                })
                .collect(),
        },
    ]
}

/// Runs every query once (dropping the page cache before each when `cold`); median and
/// p95. Panics on a result count that is not what was generated.
fn time_kind(tracking: &Tracking, kind: &Kind, cold: bool) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut returned = 0;
    for (q, expected) in &kind.queries {
        if cold {
            drop_caches();
        }
        let started = Instant::now();
        let found = tracking.search(q).expect("search");
        times.push(started.elapsed());
        assert_eq!(
            found.len(),
            *expected,
            "{}: {q:?} found {} records, {expected} were generated",
            kind.name,
            found.len()
        );
        returned = found.len();
    }
    times.sort();
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    (at(50), at(95), returned)
}

fn bytes_of(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("MARKGATE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_800_000);
    let (dir, _tmp, built) = store_dir(n);
    let tracking = Tracking::new(&dir, 400);
    let can_drop = drop_caches();
    println!(
        "{n} records in {} day files: index {:.0} MB, JSONL {:.0} MB, built {}",
        n.div_ceil(PER_DAY),
        bytes_of(&dir, "index.sqlite") as f64 / 1e6,
        bytes_of(&dir, "tracking-") as f64 / 1e6,
        built.map_or("earlier (reused)".to_string(), |b| format!("in {b:.1?}")),
    );
    println!("| query | records each | warm median | warm p95 | cold median | cold p95 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for kind in kinds(n) {
        // Cold first (each query after a dropped cache), then warm: the same queries
        // once to fill the cache, then timed.
        let cold = can_drop.then(|| time_kind(&tracking, &kind, true));
        let _ = time_kind(&tracking, &kind, false);
        let (median, p95, returned) = time_kind(&tracking, &kind, false);
        let (cm, cp) = cold.map_or(("n/a".into(), "n/a".into()), |(m, p, _)| {
            (format!("{m:.2?}"), format!("{p:.2?}"))
        });
        println!(
            "| {} | {returned} | {median:.2?} | {p95:.2?} | {cm} | {cp} |",
            kind.name
        );
    }
    if !can_drop {
        println!("(cold: the page cache cannot be dropped here; cold figures not measured)");
    }
}
