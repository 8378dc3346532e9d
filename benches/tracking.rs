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
//! The PostgreSQL store, by the same queries through its `TrackingStore`:
//!
//!   MARKGATE_BENCH_STORE=postgres MARKGATE_BENCH_PG_URL=postgres://postgres@127.0.0.1:P/markgate \
//!     [MARKGATE_BENCH_PG_COLD='command that restarts the server'] cargo bench --bench tracking
//!
//! (a migrated database; the records are generated in the server, one day's partition at a
//! time, and kept: a database already holding `n` records is reused). Cold there means the
//! server restarted (its shared buffers emptied) and the page cache dropped before each query.
//!
//! Defaults to 1,800,000 records (36 days). 5,000 senders and 20,000 recipients, so a
//! sender has N/5,000 records (3,600 at 18 M). Prints median and p95 per query kind, warm
//! and — where the page cache can be dropped (`/proc/sys/vm/drop_caches`, root) — cold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use markgate::config::{Config, PgTls, StoreBackend};
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
fn time_kind(
    tracking: &dyn TrackingStore,
    kind: &Kind,
    cold: Option<&dyn Fn()>,
) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut returned = 0;
    for (q, expected) in &kind.queries {
        if let Some(cool) = cold {
            cool();
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

/// The generator's records, made in the server: the same fields `record(k)` has.
const PG_GENERATE: &str = r#"
INSERT INTO tracking (time, queue_id, message_id, sender, recipients, action, rule, level, outcome, record, digest)
SELECT t, q, mid, s, ARRAY[r], act, rl, 'RESTRICTED', oc,
  jsonb_build_object('time', to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'queue_id', q,
    'front_end', 'smtp', 'sender', s,
    'recipients', jsonb_build_array(jsonb_build_object('address', r, 'class', 'cjsm')),
    'message_id', mid, 'subject', '[RESTRICTED] Case file ' || (k % 100000), 'size', 10240,
    'marking', jsonb_build_object('level', 'RESTRICTED', 'rank', 2, 'descriptors', '[]'::jsonb,
      'caveats', '[]'::jsonb, 'evidence', '[]'::jsonb),
    'signature', true, 'confidentiality_statement', true, 'action', act, 'rule', rl,
    'reply', '250 2.0.0 Ok', 'outcome', oc),
  md5(k::text)
FROM (SELECT k,
    to_timestamp($3::bigint + (k / 50000) * 86400 + ((k % 50000) * 86400 / 50000)) AS t,
    lpad(upper(to_hex(k)), 16, '0') AS q, '<' || k || '@police.cjsm.net>' AS mid,
    'user' || (k % 5000) || '@police.cjsm.net' AS s, 'r' || (k % 20000) || '@cps.cjsm.net' AS r,
    CASE WHEN k % 10 = 0 THEN 'quarantine' ELSE 'pass' END AS act,
    CASE WHEN k % 10 = 0 THEN 'unmarked-to-external' END AS rl,
    CASE WHEN k % 10 = 0 THEN 'held' ELSE 'delivered' END AS oc
  FROM generate_series($1::bigint, $2::bigint) k) g
"#;

/// Fills the database at `url` with `n` records (unless it holds exactly that many);
/// the build time when it built.
fn pg_generate(url: &str, n: usize) -> Option<Duration> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to MARKGATE_BENCH_PG_URL");
        tokio::spawn(conn);
        let have: i64 = client
            .query_one("SELECT count(*) FROM tracking", &[])
            .await
            .expect("count")
            .get(0);
        if have as usize == n {
            return None;
        }
        let started = Instant::now();
        client
            .batch_execute("TRUNCATE tracking, tracking_ids")
            .await
            .expect("truncate");
        let days = n.div_ceil(PER_DAY);
        for day in 0..days {
            let from = timefmt::date(day_start(day));
            let to = timefmt::date(day_start(day + 1));
            let name = format!("tracking_{}", from.replace('-', ""));
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF tracking FOR VALUES FROM ('{from}') TO ('{to}')"
                ))
                .await
                .expect("partition");
            let lo = (day * PER_DAY) as i64;
            let hi = (((day + 1) * PER_DAY).min(n) - 1) as i64;
            client
                .execute(PG_GENERATE, &[&lo, &hi, &(START as i64)])
                .await
                .expect("generate");
        }
        client
            .batch_execute("INSERT INTO tracking_ids (message_id, time) SELECT message_id, time FROM tracking")
            .await
            .expect("ids");
        client.batch_execute("VACUUM ANALYZE tracking").await.expect("vacuum");
        client.batch_execute("VACUUM ANALYZE tracking_ids").await.expect("vacuum");
        Some(started.elapsed())
    })
}

fn pg_main(n: usize) {
    let url = std::env::var("MARKGATE_BENCH_PG_URL").expect("MARKGATE_BENCH_PG_URL");
    let built = pg_generate(&url, n);
    let mut config = Config::default();
    config.store.backend = StoreBackend::Postgres;
    config.store.url = Some(url);
    config.store.tls = PgTls::Disable;
    config.store.timeout = Duration::from_secs(120);
    config.tracking.retention_days = 400;
    let state = tempfile::tempdir().expect("tempdir");
    config.state_dir = state.path().to_path_buf();
    let store = markgate::store::Store::open(&config).expect("store");
    let restart = std::env::var("MARKGATE_BENCH_PG_COLD").ok();
    let cool = || {
        if let Some(cmd) = &restart {
            let _ = std::process::Command::new("sh").args(["-c", cmd]).status();
        }
        drop_caches();
    };
    println!(
        "{n} records in PostgreSQL, {} daily partitions, built {}",
        n.div_ceil(PER_DAY),
        built.map_or("earlier (reused)".to_string(), |b| format!("in {b:.1?}")),
    );
    table(
        &*store.tracking,
        restart.is_some().then_some(&cool as &dyn Fn()),
        n,
    );
}

fn table(tracking: &dyn TrackingStore, cold: Option<&dyn Fn()>, n: usize) {
    println!("| query | records each | warm median | warm p95 | cold median | cold p95 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for kind in kinds(n) {
        // Cold first (each query after a dropped cache), then warm: the same queries
        // once to fill the cache, then timed.
        let cold_times = cold.map(|c| time_kind(tracking, &kind, Some(c)));
        let _ = time_kind(tracking, &kind, None);
        let (median, p95, returned) = time_kind(tracking, &kind, None);
        let (cm, cp) = cold_times.map_or(("n/a".into(), "n/a".into()), |(m, p, _)| {
            (format!("{m:.2?}"), format!("{p:.2?}"))
        });
        println!(
            "| {} | {returned} | {median:.2?} | {p95:.2?} | {cm} | {cp} |",
            kind.name
        );
    }
}

fn main() {
    let n: usize = std::env::var("MARKGATE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_800_000);
    if std::env::var("MARKGATE_BENCH_STORE").as_deref() == Ok("postgres") {
        pg_main(n);
        return;
    }
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
    let cool = || {
        drop_caches();
    };
    table(&tracking, can_drop.then_some(&cool as &dyn Fn()), n);
    if !can_drop {
        println!("(cold: the page cache cannot be dropped here; cold figures not measured)");
    }
}
