//! The review console in a real headless Chromium (driven through chromedriver with
//! fantoccini), behind a small reverse proxy standing in for oauth2-proxy: it adds
//! `X-Forwarded-User` and `X-Forwarded-Groups`, as a signed-in analyst's proxy would.

use std::process::{Child, Command, Stdio};

use fantoccini::{ClientBuilder, Locator};

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";

/// A reverse proxy on its own port that signs every request in as USER in GROUPS.
const PROXY: &str = r#"
import http.client, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
upstream, user, groups = int(sys.argv[2]), sys.argv[3], sys.argv[4]
class P(BaseHTTPRequestHandler):
    def relay(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ('host', 'x-forwarded-user', 'x-forwarded-groups')}
        headers['X-Forwarded-User'] = user
        headers['X-Forwarded-Groups'] = groups
        c = http.client.HTTPConnection('127.0.0.1', upstream, timeout=30)
        c.request(self.command, self.path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ('transfer-encoding', 'connection', 'content-length'):
                self.send_header(k, v)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = relay
    do_POST = relay
    def log_message(self, *a): pass
ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), P).serve_forever()
"#;

struct Proxy(Child, u16);

impl Proxy {
    fn start(upstream: u16, user: &str, groups: &str) -> Proxy {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-c",
                PROXY,
                &port.to_string(),
                &upstream.to_string(),
                user,
                groups,
            ])
            .spawn()
            .unwrap();
        wait_port(port);
        Proxy(child, port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Driver(Child, u16);

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver)");
        wait_port(port);
        Driver(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP request to `port` with the given headers; (status, body).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// A gateway with the console on a port of its own, and the sink it releases to.
fn console() -> (Sink, u16, Markgate) {
    let sink = Sink::start(&[]);
    let review_port = free_port();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!("review:\n  listen: 127.0.0.1:{review_port}")],
            ..Opts::default()
        },
    );
    wait_port(review_port);
    (sink, review_port, mg)
}

#[test]
fn an_analyst_reviews_and_releases_a_held_message_in_the_browser() {
    let (sink, review_port, mg) = console();
    // Held: unmarked to an outside address, with markup that must stay text on the page.
    let msg = "From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: lunch <b>plans</b>\r\n\r\n<script>document.title='pwned'</script>See you at noon.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n";
    assert_eq!(
        smtplib_send(mg.port, FROM, &["friend@example.com"], msg).0,
        250
    );
    let proxy = Proxy::start(review_port, "alice", "staff,markgate-reviewers");
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", proxy.1);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
            .expect("a Chromium session");

        browser.goto(&format!("{base}/quarantine")).await.unwrap();
        let who = browser
            .find(Locator::Id("who"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(who, "alice (reviewer)");
        let rows = browser
            .find_all(Locator::Css("tr.held-message"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let row = rows[0].text().await.unwrap();
        assert!(
            row.contains(FROM) && row.contains("unmarked-to-external"),
            "{row}"
        );
        assert!(
            row.contains("lunch <b>plans</b>"),
            "the subject as text: {row}"
        );
        browser
            .find(Locator::Css("tr.held-message a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // The message page: envelope, rule and its description, the message as text.
        // The click navigates: wait for the new page rather than read the old one.
        let rule = browser
            .wait()
            .for_element(Locator::Id("rule"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            rule.starts_with("unmarked-to-external: Unmarked mail must be protected"),
            "{rule}"
        );
        let text = browser
            .find(Locator::Id("text"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("<script>document.title='pwned'</script>"),
            "{text}"
        );
        assert_ne!(
            browser.title().await.unwrap(),
            "pwned",
            "the message's script never ran"
        );

        // Release, with a reason.
        browser
            .find(Locator::Id("release-reason"))
            .await
            .unwrap()
            .send_keys("checked with the sender")
            .await
            .unwrap();
        browser
            .find(Locator::Id("release"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The click navigates: wait for the new page rather than read the old one.
        let notice = browser
            .wait()
            .for_element(Locator::Id("notice"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(notice.starts_with("Released "), "{notice}");
        assert!(
            browser.find(Locator::Id("empty")).await.is_ok(),
            "nothing held any more"
        );

        // The trace and the audit show it.
        browser
            .goto(&format!("{base}/trace?sender={FROM}"))
            .await
            .unwrap();
        let records = browser.find_all(Locator::Css("tr.record")).await.unwrap();
        assert!(records.len() >= 2, "the hold and the release");
        browser.goto(&format!("{base}/audit")).await.unwrap();
        let audit = browser
            .find(Locator::Css("tr.record"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            audit.contains("alice") && audit.contains("checked with the sender"),
            "{audit}"
        );
        browser.close().await.unwrap();
    });

    let dumps = sink.wait_for(1);
    assert!(String::from_utf8_lossy(&dumps[0]).contains("X-Markgate-Released: by alice"));
    let released = mg
        .records()
        .into_iter()
        .find(|r| r["outcome"] == "released")
        .unwrap();
    assert_eq!(released["released_by"], "alice");
    assert_eq!(released["reason"], "checked with the sender");
}

#[test]
fn the_console_believes_only_its_proxy_and_its_roles() {
    let (sink, review_port, mg) = console();
    let msg = "From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: lunch\r\n\r\nSee you.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n";
    assert_eq!(
        smtplib_send(mg.port, FROM, &["friend@example.com"], msg).0,
        250
    );
    let id = mg.records()[0]["queue_id"].as_str().unwrap().to_string();
    // No user: 401. A user with no review group: 403. A viewer sees but may not release.
    assert_eq!(request(review_port, "GET", "/quarantine", &[], "").0, 401);
    let nobody = [
        ("X-Forwarded-User", "mallory"),
        ("X-Forwarded-Groups", "staff"),
    ];
    assert_eq!(
        request(review_port, "GET", "/quarantine", &nobody, "").0,
        403
    );
    let viewer = [
        ("X-Forwarded-User", "vic"),
        ("X-Forwarded-Groups", "markgate-viewers"),
    ];
    let (status, page) = request(
        review_port,
        "GET",
        &format!("/quarantine/{id}"),
        &viewer,
        "",
    );
    assert_eq!(status, 200);
    assert!(
        !page.contains("release-form"),
        "no release form for a viewer"
    );
    let form = "csrf=x&reason=because";
    assert_eq!(
        request(
            review_port,
            "POST",
            &format!("/quarantine/{id}/release"),
            &viewer,
            form
        )
        .0,
        403
    );
    // A reviewer with a forged form token is refused too (no release happens).
    let reviewer = [
        ("X-Forwarded-User", "rita"),
        ("X-Forwarded-Groups", "markgate-reviewers"),
    ];
    let (_, page) = request(
        review_port,
        "POST",
        &format!("/quarantine/{id}/release"),
        &reviewer,
        form,
    );
    assert!(page.contains("the form has expired"), "{page}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(sink.messages().is_empty());
    let held: serde_json::Value =
        serde_json::from_slice(&mg.cli(&["quarantine", "list", "--json"]).stdout).unwrap();
    assert_eq!(held.as_array().unwrap().len(), 1, "still held");
}

/// "Why was my mail refused?": the trace page narrows by action, rule and level and shows,
/// for each record, the rules that matched, the marking's evidence and the reply sent.
#[test]
fn the_trace_finds_a_refused_message_and_shows_why() {
    let (_sink, review_port, mg) = console();
    let secret = "From: jane@police.cjsm.net\r\nTo: bob@cps.cjsm.net\r\nSubject: SECRET plans\r\nMessage-ID: <why-refused@police.cjsm.net>\r\n\r\nSECRET\r\n\r\nAll of it.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n";
    let ok = "From: jane@police.cjsm.net\r\nTo: bob@cps.cjsm.net\r\nSubject: [OFFICIAL] fine\r\nMessage-ID: <fine@police.cjsm.net>\r\n\r\nOFFICIAL\r\n\r\nFine.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n";
    assert_eq!(
        smtplib_send(mg.port, FROM, &["bob@cps.cjsm.net"], secret).0,
        550
    );
    smtplib_send(mg.port, FROM, &["bob@cps.cjsm.net"], ok);
    let viewer = [
        ("X-Forwarded-User", "vic"),
        ("X-Forwarded-Groups", "markgate-viewers"),
    ];
    let get = |path: &str| {
        let (status, page) = request(review_port, "GET", path, &viewer, "");
        assert_eq!(status, 200, "{path}: {page}");
        page
    };
    let rows = |page: &str| page.matches("<tr class=\"record\"").count();

    let page = get("/trace?message_id=why-refused%40police.cjsm.net&action=reject");
    assert_eq!(rows(&page), 1, "{page}");
    assert!(
        page.contains("SECRET plans"),
        "the subject is shown: {page}"
    );
    assert!(page.contains("class=\"matched\""), "matched rules: {page}");
    assert!(page.contains("class=\"evidence\""), "evidence: {page}");
    assert!(page.contains("550 5.7.1"), "the reply sent: {page}");
    // Each filter narrows: the passed message is not a reject, nor SECRET.
    assert_eq!(
        rows(&get("/trace?sender=jane%40police.cjsm.net&action=reject")),
        1
    );
    assert_eq!(rows(&get("/trace?level=SECRET")), 1);
    assert_eq!(rows(&get("/trace?action=pass")), 1);
    assert_eq!(rows(&get("/trace?since=2999-01-01T00:00:00Z")), 0);
    // A form value is shown back escaped, never as markup.
    let page = get("/trace?rule=%3Cscript%3E");
    assert!(
        !page.contains("<script>") && page.contains("&#60;script&#62;"),
        "{page}"
    );
}

/// The quarantine list narrows by level, subject text and time, and a filter on rule or
/// level is applied before the page's limit (so older matches are not hidden).
#[test]
fn the_quarantine_list_filters_by_level_subject_and_time() {
    let (_sink, review_port, mg) = console();
    let held = |subject: &str| {
        format!("From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: {subject}\r\n\r\nSee you.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n")
    };
    for subject in ["Lunch on Friday", "Case file 42"] {
        assert_eq!(
            smtplib_send(mg.port, FROM, &["friend@example.com"], &held(subject)).0,
            250
        );
    }
    let viewer = [
        ("X-Forwarded-User", "vic"),
        ("X-Forwarded-Groups", "markgate-viewers"),
    ];
    let rows = |path: &str| {
        let (status, page) = request(review_port, "GET", path, &viewer, "");
        assert_eq!(status, 200, "{path}: {page}");
        page.matches("<tr class=\"held-message\"").count()
    };
    assert_eq!(rows("/quarantine"), 2);
    assert_eq!(rows("/quarantine?subject=case+FILE"), 1);
    assert_eq!(rows("/quarantine?subject=nothing+like+it"), 0);
    assert_eq!(rows("/quarantine?level=unmarked"), 2);
    assert_eq!(rows("/quarantine?level=SECRET"), 0);
    assert_eq!(rows("/quarantine?since=2999-01-01T00:00:00Z"), 0);
    assert_eq!(rows("/quarantine?until=2999-01-01T00:00:00Z"), 2);
}
