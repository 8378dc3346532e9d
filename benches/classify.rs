//! Classify + decide, the per-message work markgate adds to the mail path: a 10 KB
//! RESTRICTED message with a signature (the benchmark message of issue 9), the same
//! message at 100 KB and 1 MB (linearity), and 10 against 1,000 rules.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use markgate::config::Config;
use markgate::gateway::Snapshot;
use markgate::message::Spool;
use markgate::policy::Policy;
use markgate::transaction::{ClientInfo, Envelope, Recipient, Transaction};

/// The benchmark message: RESTRICTED, a signature, plain text padded to `size` bytes.
pub fn message(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: Jane Doe <jane@police.cjsm.net>\r\nTo: bob@cps.cjsm.net\r\nSubject: [RESTRICTED] Case file 4411\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@police.cjsm.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRESTRICTED\r\n\r\nDear Bob,\r\n\r\n",
    );
    let line = "Please find the witness statements and the case summary attached as discussed.\r\n";
    let tail = "\r\nJane Doe\r\nWitness Care Unit\r\nTel: 020 7946 0018\r\nThis e-mail is intended solely for the addressee.\r\n";
    while m.len() + line.len() + tail.len() < size {
        m.push_str(line);
    }
    m.push_str(tail);
    m.into_bytes()
}

fn transaction(raw: Vec<u8>) -> Transaction {
    Transaction {
        id: "BENCH".into(),
        received: std::time::SystemTime::now(),
        client: ClientInfo {
            addr: "127.0.0.1".into(),
            helo: "bench".into(),
        },
        tls: None,
        envelope: Envelope {
            sender: markgate::mailbox::Mailbox::lenient("jane@police.cjsm.net"),
            params: Default::default(),
            recipients: vec![Recipient::plain(
                markgate::mailbox::Mailbox::lenient("bob@cps.cjsm.net").expect("address"),
            )],
        },
        message: Arc::new(Spool::from_bytes(raw)),
        front_end: markgate::transaction::Origin::Classify,
        mta_queue_id: None,
    }
}

fn snapshot(rules: Option<String>) -> Snapshot {
    let config = Config::default();
    let mut snap = markgate::runtime::load_snapshot(&config).expect("default rules");
    if let Some(text) = rules {
        snap.policy = Policy::from_str(&text, "bench.yaml").expect("bench rules");
    }
    snap
}

/// `n` rules of the kinds people write (regexes on subject and sender, levels), none of
/// which match the benchmark message, then the default CJSM rules' conditions.
fn many_rules(n: usize) -> String {
    let mut y = String::from("rules:\n");
    for i in 0..n {
        match i % 3 {
            0 => y.push_str(&format!("  - id: r{i}\n    when: {{subject: 'project-{i}\\b'}}\n    action: quarantine\n")),
            1 => y.push_str(&format!("  - id: r{i}\n    when: {{sender: ['^user{i}@'], level: [SECRET]}}\n    action: quarantine\n")),
            _ => y.push_str(&format!("  - id: r{i}\n    when: {{attachment_name: ['\\.x{i}$']}}\n    action: quarantine\n")),
        }
    }
    y.push_str("  - id: above-restricted\n    when: {rank_at_least: 3}\n    action: {reject: {code: 550, status: '5.7.1', text: no}}\n");
    y
}

fn bench(c: &mut Criterion) {
    let snap = snapshot(None);
    let mut group = c.benchmark_group("classify_and_decide");
    for size in [10 * 1024, 100 * 1024, 1024 * 1024] {
        let txn = transaction(message(size));
        let eval = snap.evaluate(&txn);
        assert_eq!(
            eval.verdict.action.name(),
            "pass",
            "the benchmark message passes"
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &txn, |b, txn| {
            b.iter(|| black_box(snap.evaluate(black_box(txn))))
        });
    }
    group.finish();

    let txn = transaction(message(10 * 1024));
    let mut rules = c.benchmark_group("rules_10kb");
    for n in [10, 1000] {
        let snap = snapshot(Some(many_rules(n)));
        let classification = snap.classify(&txn.message).expect("classifies");
        rules.bench_with_input(BenchmarkId::new("decide", n), &classification, |b, c| {
            b.iter(|| black_box(snap.decide(&txn, Ok(black_box(c.clone())))))
        });
        rules.bench_with_input(
            BenchmarkId::new("classify_and_decide", n),
            &txn,
            |b, txn| b.iter(|| black_box(snap.evaluate(black_box(txn)))),
        );
    }
    rules.finish();
}

/// A `.docx` of about `size` bytes the way real ones are: a labelled document whose bulk is
/// an embedded picture (stored, incompressible) and a long body, attached to a short mail.
fn labelled_docx_message(size: usize) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("[Content_Types].xml", deflated)
            .expect("zip");
        zip.write_all(b"<Types xmlns=\"x\"/>").expect("zip");
        zip.start_file("docProps/custom.xml", deflated)
            .expect("zip");
        zip.write_all(br#"<Properties><property name="MSIP_Label_g1_Enabled"><vt:lpwstr>true</vt:lpwstr></property><property name="MSIP_Label_g1_Name"><vt:lpwstr>OFFICIAL-SENSITIVE</vt:lpwstr></property></Properties>"#).expect("zip");
        zip.start_file("word/footer1.xml", deflated).expect("zip");
        zip.write_all(
            b"<w:ftr xmlns:w=\"x\"><w:p><w:r><w:t>OFFICIAL-SENSITIVE</w:t></w:r></w:p></w:ftr>",
        )
        .expect("zip");
        zip.start_file("word/document.xml", deflated).expect("zip");
        zip.write_all(b"<w:document xmlns:w=\"x\"><w:body>")
            .expect("zip");
        for i in 0..5000 {
            write!(zip, "<w:p><w:r><w:t>Paragraph {i} of the witness statement, as taken.</w:t></w:r></w:p>").expect("zip");
        }
        zip.write_all(b"</w:body></w:document>").expect("zip");
        zip.start_file("word/media/image1.png", stored)
            .expect("zip");
        // Incompressible bytes (a picture), from a cheap generator.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let picture: Vec<u8> = (0..size.saturating_sub(200_000))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        zip.write_all(&picture).expect("zip");
        zip.finish().expect("zip");
    }
    let docx = buf.into_inner();
    let b64: String = {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(&docx);
        text.as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
            .collect()
    };
    format!(
        "From: jane@police.cjsm.net\r\nTo: bob@cps.cjsm.net\r\nSubject: Statement\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nPlease see the attached.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n--b\r\nContent-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document; name=statement.docx\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}--b--\r\n"
    )
    .into_bytes()
}

/// A 5 MB labelled `.docx` against the 10 KB plain-text message, in one run.
fn documents(c: &mut Criterion) {
    let snap = snapshot(None);
    let mut group = c.benchmark_group("documents");
    let docx = transaction(labelled_docx_message(5 * 1024 * 1024));
    let eval = snap.evaluate(&docx);
    assert_eq!(
        eval.classification.marking.level_name(),
        "OFFICIAL-SENSITIVE",
        "the document's label is read"
    );
    group.sample_size(20);
    group.bench_function("docx_5mb", |b| {
        b.iter(|| black_box(snap.evaluate(black_box(&docx))))
    });
    let plain = transaction(message(10 * 1024));
    group.bench_function("plain_10kb", |b| {
        b.iter(|| black_box(snap.evaluate(black_box(&plain))))
    });
    group.finish();
}

criterion_group!(benches, bench, documents);
criterion_main!(benches);
