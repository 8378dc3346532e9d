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

/// Another site: serves `sys.argv[2]` as its page.
const EVIL_SITE: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
page = sys.argv[2].encode()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.send_header('Content-Length', str(len(page)))
        self.end_headers()
        self.wfile.write(page)
    def log_message(self, *a): pass
s = HTTPServer(('127.0.0.1', int(sys.argv[1])), H)
print(s.server_address[1], flush=True)
s.serve_forever()
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

/// A headless Chromium session through `driver`.
async fn chromium(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session")
}

/// Goes to `url` and waits for the element with id `id`; a first load that shows something
/// else (a fresh browser's first navigation has come back blank under load) is tried once
/// more, and a second one fails with the page it showed.
async fn open(browser: &fantoccini::Client, url: &str, id: &str) {
    for attempt in 0..2 {
        browser.goto(url).await.unwrap();
        let found = browser
            .wait()
            .at_most(std::time::Duration::from_secs(10))
            .for_element(Locator::Id(id))
            .await;
        if found.is_ok() {
            return;
        }
        let shown = browser.source().await.unwrap_or_default();
        eprintln!("{url}: no #{id} on load {attempt}: {shown}");
        if attempt == 1 {
            panic!("{url} never showed #{id}: {shown}");
        }
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
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// A gateway with the console on a port of its own, and the sink it releases to.
fn console() -> (Sink, u16, Markgate) {
    console_with(Vec::new())
}

/// The same with more top-level config (`store:`).
fn console_with(mut top: Vec<String>) -> (Sink, u16, Markgate) {
    let sink = Sink::start(&[]);
    let review_port = free_port();
    top.push(format!("review:\n  listen: 127.0.0.1:{review_port}"));
    let mg = Markgate::with(
        sink.port,
        Opts {
            top,
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
        let browser = chromium(&driver).await;

        open(&browser, &format!("{base}/quarantine"), "who").await;
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

        // Another site's page posting this very form (even with its token, leaked) is
        // refused on what the browser says about where the request came from.
        let token = browser
            .find(Locator::Css("#release-form input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        let action = browser
            .find(Locator::Id("release-form"))
            .await
            .unwrap()
            .attr("action")
            .await
            .unwrap()
            .unwrap();
        let evil = format!(
            "<form id=f method=post action=\"{base}{action}\"><input name=csrf value=\"{token}\">\
             <input name=reason value=pwned></form><script>document.getElementById('f').submit()</script>"
        );
        let message_page = browser.current_url().await.unwrap();
        let (mut site, site_port) = crate::support::python_server(EVIL_SITE, &[evil.as_ref()]);
        browser
            .goto(&format!("http://127.0.0.1:{site_port}/"))
            .await
            .unwrap();
        let refused = browser
            .wait()
            .for_element(Locator::XPath("//*[contains(text(), 'cross-site request refused')]"))
            .await;
        let _ = site.kill();
        let _ = site.wait();
        assert!(refused.is_ok(), "the forged post was refused");
        assert!(sink.messages().is_empty(), "nothing released by it");
        browser.goto(message_page.as_str()).await.unwrap();
        browser
            .wait()
            .for_element(Locator::Id("release-reason"))
            .await
            .unwrap();

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
        open(&browser, &format!("{base}/trace?sender={FROM}"), "records").await;
        let records = browser.find_all(Locator::Css("tr.record")).await.unwrap();
        assert!(records.len() >= 2, "the hold and the release");
        open(&browser, &format!("{base}/audit"), "records").await;
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

const REVIEWER: [(&str, &str); 2] = [
    ("X-Forwarded-User", "rita"),
    ("X-Forwarded-Groups", "markgate-reviewers"),
];

/// The form token on a page, as the console wrote it.
fn csrf_in(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// A forged POST is refused on what the browser says about where it came from, even if it
/// carries a good form token; every page tells the browser to run only the console's files.
#[test]
fn a_cross_site_post_is_refused_even_with_a_valid_form_token() {
    let (sink, review_port, mg) = console();
    let msg = "From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: lunch\r\n\r\nSee you.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n";
    assert_eq!(
        smtplib_send(mg.port, FROM, &["friend@example.com"], msg).0,
        250
    );
    let id = mg.records()[0]["queue_id"].as_str().unwrap().to_string();
    let (status, page) = request(
        review_port,
        "GET",
        &format!("/quarantine/{id}"),
        &REVIEWER,
        "",
    );
    assert_eq!(status, 200);
    for header in [
        "content-security-policy: default-src 'none'; style-src 'self'",
        "x-frame-options: DENY",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "cache-control: no-store",
    ] {
        assert!(
            page.to_lowercase().contains(&header.to_lowercase()),
            "{header}: {page}"
        );
    }
    assert!(!page.contains("<style"), "no inline style under the CSP");
    let (status, css) = request(review_port, "GET", "/static/console.css", &REVIEWER, "");
    assert!(status == 200 && css.contains("text/css"), "{css}");

    let form = format!("csrf={}&reason=because", csrf_in(&page));
    let release = format!("/quarantine/{id}/release");
    for forged in [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
        ("Origin", "http://evil.example"),
    ] {
        let headers = [REVIEWER[0], REVIEWER[1], forged];
        let (status, page) = request(review_port, "POST", &release, &headers, &form);
        assert_eq!(status, 403, "{forged:?}: {page}");
        assert!(page.contains("cross-site request refused"), "{page}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(sink.messages().is_empty(), "nothing released");
    // The same form from the console's own page goes through, and its notice is shown.
    let headers = [REVIEWER[0], REVIEWER[1], ("Sec-Fetch-Site", "same-origin")];
    let (status, page) = request(review_port, "POST", &release, &headers, &form);
    assert_eq!(status, 303, "{page}");
    sink.wait_for(1);
    let location = page
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a redirect")
        .trim()
        .to_string();
    let (_, list) = request(review_port, "GET", &location, &REVIEWER, "");
    assert!(list.contains("id=\"notice\">Released "), "{list}");
    // A link from elsewhere cannot put its words in the console's notice.
    let (_, list) = request(
        review_port,
        "GET",
        "/quarantine?notice=Session+expired%3A+sign+in+at+evil.example",
        &REVIEWER,
        "",
    );
    assert!(!list.contains("evil.example"), "{list}");
}

const VIEWER: [(&str, &str); 2] = [
    ("X-Forwarded-User", "vic"),
    ("X-Forwarded-Groups", "markgate-viewers"),
];

/// A held message's page marks the evidence where it stands (subject and text, as the
/// classifier read them), shows HTML only as its text, and lists the attachments: a
/// viewer sees them, a reviewer (`review.download_role`) takes one, and that is audited.
#[test]
fn a_held_message_shows_its_evidence_and_attachments_by_role() {
    let (_sink, review_port, mg) = console();
    let msg = "From: jane@police.cjsm.net\r\nTo: all@cps.cjsm.net\r\nSubject: [OFFICIAL-SENSITIVE] case 7\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>official-sensitive</p><script>alert(1)</script><p>Notes attached.</p><p>Jane Doe<br>Tel: 020 7946 0018</p>\r\n--b\r\nContent-Type: image/png; name=\"scan.png\"\r\nContent-Disposition: attachment; filename=\"scan.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n";
    assert_eq!(
        smtplib_send(mg.port, FROM, &["all@cps.cjsm.net"], msg).0,
        250
    );
    let id = mg.records()[0]["queue_id"].as_str().unwrap().to_string();
    let path = format!("/quarantine/{id}");
    let (status, page) = request(review_port, "GET", &path, &VIEWER, "");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("<td id=\"subject\"><mark>[OFFICIAL-SENSITIVE]</mark> case 7"),
        "{page}"
    );
    assert!(
        page.contains("<mark>official-sensitive</mark>"),
        "the body's banner: {page}"
    );
    assert!(page.contains("text/html (as text)"), "{page}");
    assert!(
        !page.contains("<script>") && !page.contains("<p>official"),
        "no markup of the message: {page}"
    );
    assert!(
        !page.contains("iVBORw0KGgo") && !page.contains("&#60;script&#62;"),
        "below the download role the raw source is the header block only: {page}"
    );
    assert!(
        page.contains("scan.png") && page.contains("image/png"),
        "{page}"
    );
    assert!(
        !page.contains("/attachment/"),
        "no download link for a viewer: {page}"
    );
    let download = format!("/quarantine/{id}/attachment/1");
    let (status, _) = request(review_port, "GET", &download, &VIEWER, "");
    assert_eq!(status, 403);

    let (_, page) = request(review_port, "GET", &path, &REVIEWER, "");
    assert!(page.contains(&format!("href=\"{download}\"")), "{page}");
    assert!(
        page.contains("&#60;script&#62;") && page.contains("iVBORw0KGgo"),
        "the whole raw source, escaped: {page}"
    );
    // Another site cannot make a reviewer's browser take a copy; a HEAD takes none.
    let cross = [REVIEWER[0], REVIEWER[1], ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(request(review_port, "GET", &download, &cross, "").0, 403);
    assert_eq!(
        request(review_port, "HEAD", &download, &REVIEWER, "").0,
        405
    );
    let (status, file) = request(review_port, "GET", &download, &REVIEWER, "");
    assert_eq!(status, 200, "{file}");
    let lower = file.to_lowercase();
    assert!(
        lower.contains("content-type: application/octet-stream"),
        "{file}"
    );
    assert!(
        lower.contains("content-disposition: attachment; filename=\"scan.png\""),
        "{file}"
    );
    assert!(
        file.ends_with("\r\n\r\n\u{fffd}PNG\r\n\u{1a}\n"),
        "the decoded bytes: {file:?}"
    );
    let (status, _) = request(
        review_port,
        "GET",
        &format!("/quarantine/{id}/attachment/9"),
        &REVIEWER,
        "",
    );
    assert_eq!(status, 404);
    let taken: Vec<_> = mg
        .records()
        .into_iter()
        .filter(|r| r["action"] == "download")
        .collect();
    assert_eq!(taken.len(), 1, "one download, one record");
    assert_eq!(taken[0]["by"], "rita");
    assert!(taken[0]["reason"].as_str().unwrap().contains("scan.png"));
    let (_, audit) = request(review_port, "GET", "/audit", &VIEWER, "");
    assert!(audit.contains("scan.png"), "{audit}");
}

/// Past one page, the list and the trace page on, newest first, keeping their filters.
#[test]
fn the_quarantine_and_the_trace_page_past_their_first_page() {
    let (_sink, review_port, mg) = console();
    for n in 0..3 {
        let msg = format!("From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: page test {n}\r\n\r\nSee you.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n");
        assert_eq!(
            smtplib_send(mg.port, FROM, &["friend@example.com"], &msg).0,
            250
        );
    }
    let get = |path: &str| {
        let (status, page) = request(review_port, "GET", path, &VIEWER, "");
        assert_eq!(status, 200, "{path}: {page}");
        page
    };
    let subjects = |page: &str| -> Vec<String> {
        page.match_indices("page test ")
            .map(|(at, _)| page[at..at + 11].to_string())
            .collect()
    };
    let older = |page: &str| {
        page.find("id=\"older\" href=\"").map(|at| {
            page[at + 17..]
                .split('"')
                .next()
                .unwrap()
                .replace("&#38;", "&")
        })
    };
    let mut seen = Vec::new();
    let mut path = "/quarantine?sender=jane%40police.cjsm.net&per=1".to_string();
    for _ in 0..3 {
        let page = get(&path);
        let rows = subjects(&page);
        assert_eq!(rows.len(), 1, "{page}");
        seen.extend(rows);
        match older(&page) {
            Some(next) => {
                assert!(next.contains("sender=jane%40police.cjsm.net"), "{next}");
                path = next;
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["page test 2", "page test 1", "page test 0"],
        "each once, newest first"
    );
    assert!(
        older(&get(&path)).is_none(),
        "the last page has no older one"
    );
    assert!(get(&path).contains("id=\"newer\""));

    let page = get("/trace?action=quarantine&per=2");
    assert_eq!(page.matches("<tr class=\"record\"").count(), 2);
    let next = older(&page).expect("an older page");
    let page = get(&next);
    assert_eq!(page.matches("<tr class=\"record\"").count(), 1, "{page}");
    assert!(older(&page).is_none());
}

/// Every console task on the shared store: list and page, open with the evidence marked,
/// download, release, delete, trace and audit, all against a real PostgreSQL.
#[test]
fn the_console_works_on_the_postgresql_store() {
    let pg = Postgres::start();
    pg.migrate();
    let (sink, review_port, mg) = console_with(pg.store_yaml());
    let held = |n: usize| {
        format!("From: jane@police.cjsm.net\r\nTo: all@cps.cjsm.net\r\nSubject: [OFFICIAL-SENSITIVE] pg {n}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nOFFICIAL-SENSITIVE\r\n\r\nSee attached.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n--b\r\nContent-Type: image/png; name=\"scan{n}.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n")
    };
    for n in 0..2 {
        assert_eq!(
            smtplib_send(mg.port, FROM, &["all@cps.cjsm.net"], &held(n)).0,
            250
        );
    }
    let get = |path: &str, who: &[(&str, &str)]| {
        let (status, page) = request(review_port, "GET", path, who, "");
        assert_eq!(status, 200, "{path}: {page}");
        page
    };
    let page = get("/quarantine?per=1", &VIEWER);
    assert_eq!(page.matches("<tr class=\"held-message\"").count(), 1);
    assert!(
        page.contains("pg 1") && page.contains("id=\"older\""),
        "{page}"
    );
    let page = get("/quarantine?per=1&page=1", &VIEWER);
    assert!(
        page.contains("pg 0") && !page.contains("id=\"older\""),
        "{page}"
    );
    let ids: Vec<String> = mg
        .records()
        .iter()
        .filter(|r| r["action"] == "quarantine")
        .map(|r| r["queue_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);

    let page = get(&format!("/quarantine/{}", ids[0]), &REVIEWER);
    assert!(page.contains("<mark>OFFICIAL-SENSITIVE</mark>"), "{page}");
    let (status, _) = request(
        review_port,
        "GET",
        &format!("/quarantine/{}/attachment/1", ids[0]),
        &REVIEWER,
        "",
    );
    assert_eq!(status, 200);
    let same = [REVIEWER[0], REVIEWER[1], ("Sec-Fetch-Site", "same-origin")];
    let form = format!("csrf={}&reason=list+checked&force=yes", csrf_in(&page));
    let admin = [
        ("X-Forwarded-User", "ada"),
        ("X-Forwarded-Groups", "markgate-admins"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    // The current rules would hold it again (a list): an admin forces it out.
    let page = get(&format!("/quarantine/{}", ids[0]), &admin[..2]);
    let form_admin = format!("csrf={}&reason=list+checked&force=yes", csrf_in(&page));
    let (status, reply) = request(
        review_port,
        "POST",
        &format!("/quarantine/{}/release", ids[0]),
        &admin,
        &form_admin,
    );
    assert_eq!(status, 303, "{reply}");
    sink.wait_for(1);
    let (status, reply) = request(
        review_port,
        "POST",
        &format!("/quarantine/{}/delete", ids[1]),
        &same,
        &form,
    );
    assert_eq!(status, 303, "{reply}");
    assert!(get("/quarantine", &VIEWER).contains("Nothing held."));

    let page = get("/trace?action=quarantine", &VIEWER);
    assert_eq!(page.matches("<tr class=\"record\"").count(), 2, "{page}");
    let audit = get("/audit", &VIEWER);
    for seen in ["ada", "rita", "list checked", "scan0.png"] {
        assert!(audit.contains(seen), "{seen}: {audit}");
    }
}

/// An HTTPS GET with Python's ssl (the CA trusted, a client certificate if given); the
/// status and body, or the error's text.
fn https_get(
    port: u16,
    ca: &str,
    client: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> String {
    let script = r#"
import http.client, json, ssl, sys
port, ca, cert, key, headers = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
if cert:
    ctx.load_cert_chain(cert, key)
try:
    c = http.client.HTTPSConnection('127.0.0.1', port, context=ctx, timeout=20)
    c.request('GET', '/quarantine', headers=headers)
    r = c.getresponse()
    print(r.status, r.read().decode())
except Exception as e:
    print('error', type(e).__name__, e)
"#;
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let (cert, key) = client.unwrap_or(("", ""));
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), ca, cert, key])
        .arg(serde_json::Value::Object(headers).to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `review.tls`: the console serves HTTPS itself; with `client_ca` only a certificate from
/// that CA connects, its subject names the user (the proxy's headers are not read then),
/// and a subject not in `client_users` is refused.
#[test]
fn the_console_serves_tls_and_signs_people_in_by_client_certificate() {
    let ca = crate::support::TestCa::new();
    ca.client("alice", "/O=Example Police/CN=Alice Analyst");
    ca.client("eve", "/CN=Eve");
    let other = crate::support::TestCa::new();
    other.client("alice", "/O=Example Police/CN=Alice Analyst");
    let tls = format!(
        "  tls:\n    cert: {}\n    key: {}\n    client_ca: {}\n    client_users:\n      \"CN=Alice Analyst,O=Example Police\": {{user: alice, groups: [markgate-reviewers]}}",
        ca.path("server.pem"),
        ca.path("server.key"),
        ca.path("ca.pem"),
    );
    let sink = Sink::start(&[]);
    let review_port = free_port();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!("review:\n  listen: 127.0.0.1:{review_port}\n{tls}")],
            ..Opts::default()
        },
    );
    wait_port(review_port);
    let alice = (ca.path("alice.pem"), ca.path("alice.key"));
    let forged = [
        ("X-Forwarded-User", "mallory"),
        ("X-Forwarded-Groups", "markgate-admins"),
    ];
    let page = https_get(
        review_port,
        &ca.path("ca.pem"),
        Some((&alice.0, &alice.1)),
        &forged,
    );
    assert!(page.starts_with("200 "), "{page}");
    assert!(
        page.contains("alice (reviewer)"),
        "the certificate, not the headers: {page}"
    );
    let eve = (ca.path("eve.pem"), ca.path("eve.key"));
    let page = https_get(review_port, &ca.path("ca.pem"), Some((&eve.0, &eve.1)), &[]);
    assert!(
        page.starts_with("403 ") && page.contains("CN=Eve"),
        "{page}"
    );
    let page = https_get(review_port, &ca.path("ca.pem"), None, &forged);
    assert!(
        page.starts_with("error"),
        "no certificate, no connection: {page}"
    );
    let stranger = (other.path("alice.pem"), other.path("alice.key"));
    let page = https_get(
        review_port,
        &ca.path("ca.pem"),
        Some((&stranger.0, &stranger.1)),
        &[],
    );
    assert!(
        page.starts_with("error"),
        "another CA's certificate: {page}"
    );
    // Plain HTTP to a TLS listener gets nothing.
    let (status, _) = request(review_port, "GET", "/quarantine", &forged, "");
    assert_eq!(status, 0);
    // A leaver taken out of client_users and reloaded is refused at once.
    let config = std::fs::read_to_string(&mg.config).unwrap();
    let without = config.replace(
        "\"CN=Alice Analyst,O=Example Police\"",
        "\"CN=Someone Else\"",
    );
    assert_ne!(config, without);
    std::fs::write(&mg.config, without).unwrap();
    mg.signal("HUP");
    eventually(10, "alice refused after the reload", || {
        https_get(
            review_port,
            &ca.path("ca.pem"),
            Some((&alice.0, &alice.1)),
            &[],
        )
        .starts_with("403 ")
    });
}

/// TLS without client certificates: the proxy path, over HTTPS.
#[test]
fn the_console_serves_tls_to_its_proxy() {
    let ca = crate::support::TestCa::new();
    let sink = Sink::start(&[]);
    let review_port = free_port();
    let _mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!(
                "review:\n  listen: 127.0.0.1:{review_port}\n  tls: {{cert: {}, key: {}}}",
                ca.path("server.pem"),
                ca.path("server.key")
            )],
            ..Opts::default()
        },
    );
    wait_port(review_port);
    let page = https_get(review_port, &ca.path("ca.pem"), None, &VIEWER);
    assert!(
        page.starts_with("200 ") && page.contains("vic (viewer)"),
        "{page}"
    );
}

/// `notify:`: the sender of a held message is told it was held (why, and its reference),
/// and again when it is released or deleted; from `<>`, auto-generated, never with the
/// message's subject or text; a held message from `<>` gets no notice.
#[test]
fn senders_are_told_when_their_message_is_held_released_or_deleted() {
    let (sink, review_port, mg) = console_with(vec![
        "notify:\n  from: security@police.cjsm.net\n  domains: [police.cjsm.net]".into(),
    ]);
    let held = |n: usize| {
        format!("From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: Lunch plans {n}\r\n\r\nThe secret recipe.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n")
    };
    for n in 0..2 {
        assert_eq!(
            smtplib_send(mg.port, FROM, &["friend@example.com"], &held(n)).0,
            250
        );
    }
    assert_eq!(
        smtplib_send(mg.port, "", &["friend@example.com"], &held(9)).0,
        250
    );
    let notices = sink.wait_for(2);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        sink.messages().len(),
        2,
        "no notice for the message from <>"
    );
    for n in &notices {
        let text = String::from_utf8_lossy(n);
        assert!(
            text.contains("X-Mail-Args: <> "),
            "from the null sender: {text}"
        );
        assert!(text.contains("To: jane@police.cjsm.net"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
        assert!(
            text.contains("to friend@example.com was held for review"),
            "{text}"
        );
        assert!(
            text.contains("because: Unmarked mail must be protected"),
            "{text}"
        );
        assert!(
            !text.contains("Lunch") && !text.contains("recipe"),
            "nothing of the message: {text}"
        );
    }
    let ids: Vec<String> = mg
        .records()
        .iter()
        .filter(|r| r["action"] == "quarantine" && r["sender"] == FROM)
        .map(|r| r["queue_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        assert!(notices
            .iter()
            .any(|n| String::from_utf8_lossy(n).contains(&format!("Reference: {id}"))));
    }
    // Released from the console: the message goes, then the notice.
    let (_, page) = request(
        review_port,
        "GET",
        &format!("/quarantine/{}", ids[0]),
        &REVIEWER,
        "",
    );
    let headers = [REVIEWER[0], REVIEWER[1], ("Sec-Fetch-Site", "same-origin")];
    let form = format!("csrf={}&reason=fine", csrf_in(&page));
    let (status, reply) = request(
        review_port,
        "POST",
        &format!("/quarantine/{}/release", ids[0]),
        &headers,
        &form,
    );
    assert_eq!(status, 303, "{reply}");
    let all = sink.wait_for(4);
    let released = all
        .iter()
        .map(|m| String::from_utf8_lossy(m).to_string())
        .find(|m| {
            m.contains("was\r\nreleased")
                || m.contains("was released")
                || m.contains("Subject: Your held message was released")
        })
        .expect("a released notice");
    assert!(released.contains(&ids[0]), "{released}");
    // Deleted with the CLI: told too.
    let out = mg.cli(&["quarantine", "delete", "--reason", "not needed", &ids[1]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = sink.wait_for(5);
    let deleted = all
        .iter()
        .map(|m| String::from_utf8_lossy(m).to_string())
        .find(|m| m.contains("Subject: Your held message was not delivered"))
        .expect("a deleted notice");
    assert!(
        deleted.contains(&ids[1]) && !deleted.contains("Lunch"),
        "{deleted}"
    );
}

/// In the browser: the filters update the list in place (htmx, under the CSP: the page is
/// not reloaded, the address bar follows), the console's own stylesheet applies (the
/// evidence is highlighted), and the paging links work the same way. With
/// `MARKGATE_SCREENSHOTS=DIR` the list and a message page are saved there as PNG (how the
/// README's pictures are made).
#[test]
fn the_lists_filter_in_place_and_the_evidence_is_highlighted_in_the_browser() {
    let (_sink, review_port, mg) = console();
    let held = |subject: &str, to: &str| {
        let banner = if subject.contains("OFFICIAL") {
            "<p>OFFICIAL-SENSITIVE</p>"
        } else {
            ""
        };
        format!("From: jane@police.cjsm.net\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n{banner}<p>The statements for case 42 are attached.</p><p>Jane Doe<br>Detective Constable<br>Tel: 020 7946 0018</p>\r\n--b\r\nContent-Type: application/pdf; name=\"statements.pdf\"\r\nContent-Disposition: attachment; filename=\"statements.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n")
    };
    for (subject, to) in [
        (
            "[OFFICIAL-SENSITIVE] Case 42 statements",
            "all@cps.cjsm.net",
        ),
        ("Lunch on Friday", "friend@example.com"),
        ("Rota for December", "friend@example.com"),
    ] {
        assert_eq!(
            smtplib_send(mg.port, FROM, &[to], &held(subject, to)).0,
            250
        );
    }
    let refused = "From: jane@police.cjsm.net\r\nTo: bob@cps.cjsm.net\r\nSubject: plans\r\nMessage-ID: <refused-42@police.cjsm.net>\r\n\r\nSECRET\r\n\r\nAll of it.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n";
    assert_eq!(
        smtplib_send(mg.port, FROM, &["bob@cps.cjsm.net"], refused).0,
        550
    );
    let proxy = Proxy::start(review_port, "alice", "markgate-reviewers");
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", proxy.1);
    let shots = std::env::var_os("MARKGATE_SCREENSHOTS").map(std::path::PathBuf::from);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let browser = chromium(&driver).await;
        open(&browser, &format!("{base}/quarantine"), "held").await;
        let rows = browser
            .find_all(Locator::Css("tr.held-message"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 3, "{}", browser.source().await.unwrap());
        if let Some(dir) = &shots {
            std::fs::write(
                dir.join("quarantine.png"),
                browser.screenshot().await.unwrap(),
            )
            .unwrap();
        }
        // A mark of this page: a reload would lose it.
        browser
            .execute("window.markgateSamePage = true; return true;", vec![])
            .await
            .unwrap();
        browser
            .find(Locator::Css("input[name=subject]"))
            .await
            .unwrap()
            .send_keys("case 42")
            .await
            .unwrap();
        browser
            .find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mut rows = 3;
        for _ in 0..100 {
            rows = browser
                .find_all(Locator::Css("tr.held-message"))
                .await
                .unwrap()
                .len();
            if rows == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(rows, 1, "the list narrowed");
        let same = browser
            .execute("return window.markgateSamePage === true;", vec![])
            .await
            .unwrap();
        assert_eq!(
            same,
            serde_json::json!(true),
            "updated in place, not reloaded"
        );
        let url = browser.current_url().await.unwrap();
        assert!(
            url.as_str().contains("subject=case%2042"),
            "the address follows: {url}"
        );

        browser
            .find(Locator::Css("tr.held-message a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mark = browser
            .wait()
            .for_element(Locator::Css("#text mark"))
            .await
            .unwrap();
        assert_eq!(mark.text().await.unwrap(), "OFFICIAL-SENSITIVE");
        let colour = browser
            .execute(
                "return getComputedStyle(document.querySelector('#text mark')).backgroundColor;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            colour,
            serde_json::json!("rgb(255, 213, 79)"),
            "the console's stylesheet applies"
        );
        let listed = browser
            .find(Locator::Css("tr.attachment"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            listed.contains("statements.pdf") && listed.contains("application/pdf"),
            "{listed}"
        );
        if let Some(dir) = &shots {
            std::fs::write(dir.join("message.png"), browser.screenshot().await.unwrap()).unwrap();
        }

        // "Why was my mail refused?": the trace finds it by its Message-ID.
        open(&browser, &format!("{base}/trace"), "records").await;
        browser
            .find(Locator::Css("input[name=message_id]"))
            .await
            .unwrap()
            .send_keys("<refused-42@police.cjsm.net>")
            .await
            .unwrap();
        browser
            .find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mut found = Vec::new();
        for _ in 0..100 {
            found = browser.find_all(Locator::Css("tr.record")).await.unwrap();
            if found.len() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(found.len(), 1, "one record for that Message-ID");
        let row = found[0].text().await.unwrap();
        assert!(
            row.contains("reject") && row.contains("above-restricted") && row.contains("550 5.7.1"),
            "{row}"
        );
        browser
            .find(Locator::Css("tr.detail summary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let why = browser
            .find(Locator::Css("tr.detail div.evidence"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(why.contains("SECRET"), "{why}");

        // Paging in place too.
        open(
            &browser,
            &format!("{base}/trace?action=quarantine&per=2"),
            "older",
        )
        .await;
        browser
            .execute("window.markgateSamePage = true; return true;", vec![])
            .await
            .unwrap();
        browser
            .find(Locator::Id("older"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mut records = 2;
        for _ in 0..100 {
            records = browser
                .find_all(Locator::Css("tr.record"))
                .await
                .unwrap()
                .len();
            if records == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(records, 1, "the older page");
        let same = browser
            .execute("return window.markgateSamePage === true;", vec![])
            .await
            .unwrap();
        assert_eq!(same, serde_json::json!(true));
        browser.close().await.unwrap();
    });
}
