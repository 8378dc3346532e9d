//! What Python's `email` package shows a reader, markgate finds: for every fixture, Python
//! decodes the subject and every text part (HTML rendered to its text by Python's own
//! `html.parser`), and wherever a marking stands in that text — a subject marking, or a line
//! that is a marking and nothing else — markgate's classification of the message must be at
//! least that high.

use std::path::{Path, PathBuf};
use std::process::Command;

use markgate::marking::classify::Classifier;
use markgate::marking::places;

const RENDER: &str = r#"
import email, email.policy, json, sys
from html.parser import HTMLParser

BLOCK = {'p','div','br','li','tr','td','th','h1','h2','h3','h4','h5','h6','pre','section',
         'center','article','header','footer','blockquote','ul','ol','table','hr','dt','dd'}
class Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True); self.out = []; self.skip = 0
    def handle_starttag(self, tag, attrs):
        if tag in ('script', 'style', 'title'): self.skip += 1
        if tag in BLOCK: self.out.append('\n')
    def handle_endtag(self, tag):
        if tag in ('script', 'style', 'title') and self.skip: self.skip -= 1
        if tag in BLOCK: self.out.append('\n')
    def handle_data(self, data):
        if not self.skip: self.out.append(data)

def texts(msg, out, depth=0):
    if depth > 5: return
    for part in msg.walk():
        ctype = part.get_content_type()
        if part.is_multipart(): continue
        if ctype in ('message/rfc822', 'message/global', 'message/news'):
            continue
        if part.get_content_maintype() != 'text': continue
        try:
            body = part.get_content()
        except Exception:
            payload = part.get_payload(decode=True) or b''
            body = payload.decode('latin-1')
        if ctype == 'text/html':
            t = Text(); t.feed(body); body = ''.join(t.out)
        out.append(body)
    for part in msg.walk():
        if part.get_content_type() in ('message/rfc822', 'message/global'):
            for inner in (part.get_payload() or []):
                if isinstance(inner, email.message.Message):
                    out.append('Subject: ' + str(inner.get('Subject', '')))
                    texts(inner, out, depth + 1)

result = {}
for path in sys.argv[1:]:
    try:
        msg = email.message_from_bytes(open(path, 'rb').read(), policy=email.policy.default)
        out = []
        texts(msg, out)
        result[path] = {'subject': str(msg.get('Subject', '') or ''), 'texts': out}
    except Exception as e:
        result[path] = {'subject': '', 'texts': [], 'error': str(e)}
print(json.dumps(result))
"#;

fn fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        // Mail judged ordinary by a reader, where a line-by-line reading overreads (a
        // flowed sentence whose last word, "confidential.", wrapped onto a line of its
        // own): `classifier::ordinary_mail_is_neither_refused_nor_held` holds them.
        if p.ends_with("ordinary") {
            continue;
        }
        if p.is_dir() {
            fixtures(&p, out);
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
}

#[test]
fn markgate_finds_every_marking_pythons_email_shows_a_reader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut paths = Vec::new();
    fixtures(&root, &mut paths);
    paths.sort();
    let out = Command::new("python3")
        .arg("-c")
        .arg(RENDER)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let classifier = Classifier::new(&Default::default());
    let mut missed = Vec::new();
    for path in &paths {
        let shown = &rendered[path.to_string_lossy().as_ref()];
        let mut wanted: Vec<(u8, String)> = Vec::new();
        let subject = shown["subject"].as_str().unwrap_or("");
        for (parsed, raw) in places::subject(subject) {
            if let Some(level) = parsed.level {
                wanted.push((level.rank(), format!("subject {raw:?}")));
            }
        }
        for text in shown["texts"].as_array().into_iter().flatten() {
            let text = text.as_str().unwrap_or("");
            for (parsed, raw, _) in places::banners(text) {
                if let Some(level) = parsed.level {
                    wanted.push((level.rank(), format!("line {raw:?}")));
                }
            }
        }
        let Some((rank, why)) = wanted.into_iter().max_by_key(|(r, _)| *r) else {
            continue;
        };
        let raw = std::fs::read(path).unwrap();
        let got = classifier
            .classify(&raw)
            .ok()
            .and_then(|c| c.marking.rank());
        // A message markgate holds as unclassifiable is not passed: it counts as found.
        let held = classifier.classify(&raw).is_err();
        if !held && got.is_none_or(|g| g < rank) {
            missed.push(format!(
                "{}: Python shows {why} (rank {rank}), markgate {got:?}",
                path.display()
            ));
        }
    }
    assert!(
        missed.is_empty(),
        "{} missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}
