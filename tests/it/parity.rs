//! One view of the message, whatever its size: every fixture and every message of the
//! classifier fuzz corpus is classified three ways and must come out the same — held in
//! memory, spooled to disk with a tiny threshold (the large-message path), and by the parser
//! on the raw bytes with no walk at all (the reference for what the walk may leave out).

use std::path::{Path, PathBuf};

use markgate::marking::classify::{Classification, Classifier};
use markgate::message::Spool;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_none_or(|x| x == "eml") {
            out.push(p);
        }
    }
}

/// What the rules read, in a comparable form.
fn facts(c: &Classification) -> String {
    format!(
        "{} {:?} sig={} stmt={} att={:?}",
        c.marking.level_name(),
        c.marking
            .evidence
            .iter()
            .map(|e| format!("{}={}", e.source, e.text))
            .collect::<Vec<_>>(),
        c.signature,
        c.confidentiality_statement,
        c.attachments
            .iter()
            .map(|a| (&a.name, &a.content_type))
            .collect::<Vec<_>>()
    )
}

fn both_paths(classifier: &Classifier, raw: &[u8], spool_dir: &Path) -> (String, String) {
    let memory = Spool::from_bytes(raw.to_vec());
    let mut disk = Spool::new(16, spool_dir);
    disk.write(raw).unwrap();
    assert!(raw.len() <= 16 || disk.is_spooled());
    let show = |r: Result<Classification, _>| match r {
        Ok(c) => facts(&c),
        Err(e) => format!("error: {e}"),
    };
    (
        show(classifier.classify_spool(&memory, None)),
        show(classifier.classify_spool(&disk, None)),
    )
}

#[test]
fn every_fixture_and_corpus_message_classifies_the_same_in_memory_spooled_and_unwalked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    files(&root.join("fixtures"), &mut paths);
    files(&root.join("fuzz/corpus/classifier"), &mut paths);
    assert!(paths.len() > 1000, "{} messages", paths.len());
    let classifier = Classifier::new(&Default::default());
    let dir = tempfile::tempdir().unwrap();
    let mut walked_differently = Vec::new();
    for path in &paths {
        let raw = std::fs::read(path).unwrap();
        let (memory, disk) = both_paths(&classifier, &raw, dir.path());
        assert_eq!(memory, disk, "{}", path.display());
        // The walk may refuse what the bare parser would take (too complex), never the
        // other way round, and where both classify they agree — except where the walk wrote
        // a part's type, disposition or encoding as a client reads it, which the bare parser
        // reads otherwise (that is why the walk writes it).
        let canonical =
            markgate::message::skeleton::view_of(&raw, None).is_ok_and(|v| v.canonical > 0);
        if let (false, true, Ok(reference), Ok(walked)) = (
            memory.starts_with("error"),
            canonical,
            classifier.classify_unwalked(&raw),
            classifier.classify(&raw),
        ) {
            // Then the walk's reading is never below the bare parser's.
            if walked.marking.rank() < reference.marking.rank() {
                walked_differently.push(format!(
                    "{} (written as a client reads it) is below the bare parser\n  walked:   {memory}\n  unwalked: {}",
                    path.display(),
                    facts(&reference)
                ));
            }
            continue;
        }
        if let (false, Ok(reference)) = (
            memory.starts_with("error"),
            classifier.classify_unwalked(&raw),
        ) {
            if facts(&reference) != memory {
                walked_differently.push(format!(
                    "{}\n  walked:   {memory}\n  unwalked: {}",
                    path.display(),
                    facts(&reference)
                ));
            }
        }
    }
    assert!(
        walked_differently.is_empty(),
        "{} differ:\n{}",
        walked_differently.len(),
        walked_differently.join("\n")
    );
}

/// The case that passed SECRET above 1 MiB: a part with only headers used to swallow the
/// next boundary in the large-message reader.
#[test]
fn a_headers_only_part_does_not_hide_the_next_part_at_any_size() {
    let mut msg = String::from(
        "Subject: report\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nSECRET\r\n\r\nplan\r\n\
         --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    while msg.len() < 1_200_000 {
        msg.push_str("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n");
    }
    msg.push_str("--b--\r\n");
    let classifier = Classifier::new(&Default::default());
    let dir = tempfile::tempdir().unwrap();
    let (memory, disk) = both_paths(&classifier, msg.as_bytes(), dir.path());
    assert!(memory.starts_with("SECRET"), "{memory}");
    assert_eq!(memory, disk);
}

/// Text parts as mail clients write them, where a cut on raw bytes (the old head and tail)
/// lost the banner: a reader sees SECRET, so must markgate, held in memory or spooled.
#[test]
fn long_lines_and_large_text_parts_keep_their_banners() {
    let big = |n: usize| "A".repeat(n);
    let html_data_uri = format!(
        "Subject: report\r\nContent-Type: text/html\r\n\r\n<html><body><img src=\"data:image/png;base64,{}\">\r\n<p>SECRET</p><p>The plan.</p></body></html>\r\n",
        big(300 * 1024)
    );
    let single_line_html = format!(
        "Subject: report\r\nContent-Type: text/html\r\n\r\n<p>SECRET</p><p>{}</p>\r\n",
        big(330 * 1024)
    );
    let huge_first_line = format!(
        "Subject: report\r\n\r\n{}\r\nSECRET\r\nThe plan.\r\n",
        big(300 * 1024)
    );
    let huge_last_line = format!(
        "Subject: report\r\n\r\n{}The plan.\r\n\r\nSECRET\r\n{}\r\n",
        "line of text\r\n".repeat(30_000),
        big(70 * 1024)
    );
    let classifier = Classifier::new(&Default::default());
    let dir = tempfile::tempdir().unwrap();
    for (name, msg) in [
        ("html data uri", html_data_uri),
        ("single-line html", single_line_html),
        ("huge first line", huge_first_line),
        ("huge last line", huge_last_line),
    ] {
        let reference = facts(&classifier.classify_unwalked(msg.as_bytes()).unwrap());
        assert!(reference.starts_with("SECRET"), "{name}: {reference}");
        let (memory, disk) = both_paths(&classifier, msg.as_bytes(), dir.path());
        assert_eq!(memory, reference, "{name}");
        assert_eq!(disk, reference, "{name}");
    }
}

/// The same message through a live gateway, spooled because it is over the threshold: the
/// SECRET part after the headers-only part is refused, not passed.
#[test]
fn the_live_gateway_refuses_the_secret_part_after_a_headers_only_part() {
    use crate::support::*;
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut msg = String::from(
        "From: jane@police.cjsm.net\r\nSubject: report\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nSECRET\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n\
         --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    while msg.len() < 1_100_000 {
        msg.push_str("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n");
    }
    msg.push_str("--b--\r\n");
    let (code, text) = smtplib_send(mg.port, "jane@police.cjsm.net", &["bob@cps.cjsm.net"], &msg);
    assert_eq!(code, 550, "{text}");
    assert!(sink.messages().is_empty());
}

/// Boundaries of an enclosing multipart win over an inner one whose boundary is a prefix of
/// theirs, as in the parser; and the first boundary opens a part even if it ends in `--`.
#[test]
fn boundary_precedence_and_the_first_boundary_follow_the_parser() {
    let msgs = [
        "Subject: a\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSECRET\r\n\r\nx\r\n--b1--\r\n",
        "Subject: a\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b--\r\n\
         Content-Type: text/plain\r\n\r\nSECRET\r\n\r\nx\r\n--b--\r\n",
        "Subject: a\r\nContent-Type: =?utf-8?q?multipart/mixed;_boundary=3Db?=\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nSECRET\r\n\r\nx\r\n--b--\r\n",
    ];
    let classifier = Classifier::new(&Default::default());
    let dir = tempfile::tempdir().unwrap();
    for msg in msgs {
        let reference = facts(&classifier.classify_unwalked(msg.as_bytes()).unwrap());
        let (memory, disk) = both_paths(&classifier, msg.as_bytes(), dir.path());
        assert_eq!(memory, reference, "{msg}");
        assert_eq!(disk, reference, "{msg}");
    }
}

/// RFC 2047-encoded Content-Types count as containers: a deep bomb is refused by the walk
/// before the parser could recurse into it.
#[test]
fn encoded_content_types_count_towards_the_container_limit() {
    let mut msg = String::from("Subject: bomb\r\n");
    for i in 0..400 {
        // Base64 encoded words: the bytes never say "multipart/".
        let word = b64(format!("multipart/mixed; boundary=b{i}").as_bytes());
        msg.push_str(&format!(
            "Content-Type: =?utf-8?b?{word}?=\r\n\r\n--b{i}\r\n"
        ));
    }
    assert!(!msg.contains("multipart/"));
    msg.push_str("Content-Type: text/plain\r\n\r\nSECRET\r\n");
    let classifier = Classifier::new(&Default::default());
    let err = classifier.classify(msg.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("too complex"), "{err}");
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The walk checks the clock: past its deadline a classification ends with an error (the
/// message is held) instead of running on after the gateway stopped waiting.
#[test]
fn a_classification_past_its_deadline_stops() {
    let mut msg = String::from("Subject: long\r\n\r\n");
    for _ in 0..20_000 {
        msg.push_str("line\r\n");
    }
    let classifier = Classifier::new(&Default::default());
    let spool = Spool::from_bytes(msg.into_bytes());
    let past = std::time::Instant::now() - std::time::Duration::from_millis(1);
    let err = classifier.classify_spool(&spool, Some(past)).unwrap_err();
    assert!(err.to_string().contains("budget"), "{err}");
    assert!(classifier.classify_spool(&spool, None).is_ok());
}
