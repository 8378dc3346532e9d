//! Reading what the tests produce: smtp-sink dumps, markgate's tracking files, and the
//! output of commands a test ran.

use std::path::Path;

/// The part of a sink dump from markgate's Received header on. smtp-sink writes its dumps
/// with LF line ends and its own X- headers and Received line first.
pub fn from_markgate(dump: &[u8]) -> String {
    let text = String::from_utf8_lossy(dump).to_string();
    let starts: Vec<usize> = text.match_indices("Received:").map(|(i, _)| i).collect();
    match starts.get(1) {
        Some(&i) => text[i..].to_string(),
        None => text,
    }
}

/// The `X-Markgate-*` lines (any case) of a sink dump's header block.
pub fn markgate_fields(dump: &str) -> Vec<&str> {
    let headers = dump.split("\n\n").next().unwrap_or_default();
    headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-markgate-"))
        .collect()
}

/// The message after markgate's added headers (Received, X-Markgate-*), LF line ends, with
/// the blank lines smtp-sink appends removed.
pub fn strip_added(dump: &[u8]) -> String {
    let text = from_markgate(dump);
    let mut lines = text.split_inclusive('\n').peekable();
    let mut skipped = 0;
    while let Some(line) = lines.peek() {
        let added = line.starts_with("Received:")
            || line.starts_with("X-Markgate-")
            || line.starts_with('\t')
            || line.starts_with(' ');
        if !added {
            break;
        }
        skipped += line.len();
        lines.next();
    }
    text[skipped..].trim_end_matches('\n').to_string() + "\n"
}

/// Every tracking line under `state`, as written, intent records included.
/// The records of one tracking file; a last line still being appended (no newline yet)
/// is not one.
pub(super) fn whole_lines(text: &str) -> Vec<serde_json::Value> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn raw_records_in(state: &Path) -> Vec<serde_json::Value> {
    let dir = state.join("tracking");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_else(|_| Vec::new());
    paths.retain(|p| p.extension().is_some_and(|x| x == "jsonl"));
    paths.sort();
    paths
        .iter()
        .flat_map(|p| whole_lines(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// The stdout of a command that must have succeeded (else a panic with both streams).
pub fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a command succeeded, and everything it printed (stdout, then stderr).
pub fn outcome(out: std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
