//! The review console: the quarantine, the message trace and the audit trail as web pages
//! for the security team, served on `review.listen` behind a trusted reverse proxy that
//! authenticates people (oauth2-proxy and the like pass `X-Forwarded-User` and
//! `X-Forwarded-Groups`). Pages are rendered on the server by askama, which escapes every
//! value, and a held message is shown as text, never as its own HTML. Every action goes
//! through `ops` (the CLI's own operations: claimed exactly once, tracked, audited) and
//! needs a reason.

mod auth;
mod guard;
mod listener;
mod reading;

use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::gateway::Gateway;
use crate::ops;
use crate::store::{AddressMatch, HeldFilter, Meta};
use auth::{Role, User};

struct App {
    gateway: Arc<Gateway>,
    csrf: auth::CsrfKey,
}

type Shared = Arc<App>;

/// A signed-in user holding at least the viewer role (a handler's argument).
struct Viewer(User);
/// A signed-in user holding at least the reviewer role.
struct Reviewer(User);

fn signed_in(parts: &Parts, app: &App, need: Role) -> Result<User, auth::Refused> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|c| &c.0)
        .ok_or_else(auth::Refused::no_peer)?;
    auth::user(&app.gateway, peer, &parts.headers, need)
}

impl FromRequestParts<Shared> for Viewer {
    type Rejection = auth::Refused;
    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        signed_in(parts, app, Role::Viewer).map(Viewer)
    }
}

impl FromRequestParts<Shared> for Reviewer {
    type Rejection = auth::Refused;
    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        signed_in(parts, app, Role::Reviewer).map(Reviewer)
    }
}

use listener::Peer;
pub use listener::{acceptor, Bounds};

/// Serves the console on `listener` (over TLS with `tls`) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    bounds: Bounds,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(App {
        gateway,
        csrf: auth::CsrfKey::new()?,
    });
    let router = axum::Router::new()
        .route("/", get(|| async { Redirect::to("/quarantine") }))
        .route("/quarantine", get(list))
        .route("/quarantine/{id}", get(message))
        .route("/quarantine/{id}/release", post(release))
        .route("/quarantine/{id}/delete", post(delete))
        .route("/quarantine/{id}/attachment/{n}", get(download))
        .route("/trace", get(trace))
        .route("/audit", get(audit))
        .route("/static/console.css", get(stylesheet))
        .route("/static/htmx.min.js", get(htmx))
        .layer(axum::middleware::from_fn(guard::guard))
        .with_state(app);
    let service = router.into_make_service_with_connect_info::<Peer>();
    match tls {
        None => {
            axum::serve(listener::PlainListener::new(listener, bounds), service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(acceptor) => {
            axum::serve(
                listener::TlsListener::new(listener, acceptor, bounds)?,
                service,
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    }
}

/// The console's one stylesheet, from the binary (no CDN, no inline styles under the CSP).
async fn stylesheet() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/review/console.css"),
    )
        .into_response()
}

/// htmx (see `assets/review/README.md`), from the binary: partial updates of the lists.
async fn htmx() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("../../assets/review/htmx.min.js"),
    )
        .into_response()
}

fn page(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Runs store work off the async worker (a shared store waits on the network).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

#[derive(serde::Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    sender: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    level: String,
    /// Free text, case-insensitive, in the subject.
    #[serde(default)]
    subject: String,
    /// RFC 3339, inclusive.
    #[serde(default)]
    since: String,
    /// RFC 3339, exclusive.
    #[serde(default)]
    until: String,
    #[serde(default)]
    notice: String,
    /// The console's signature on `notice` (see `notice`).
    #[serde(default)]
    signed: String,
    /// Which page, from 0 (serde's `flatten` would read numbers in a query as strings).
    #[serde(default)]
    page: usize,
    #[serde(default)]
    per: Option<usize>,
}

/// Which page of a list: `page` from 0, newest first, `per` rows each.
#[derive(Default, Clone, Copy)]
struct Paging {
    page: usize,
    per: Option<usize>,
}

/// Rows on a page unless `per` says otherwise.
const PER_PAGE: usize = 100;
/// The most rows one page may ask for.
const PER_PAGE_MAX: usize = 500;
/// The deepest page served: an analyst narrows a search rather than page past this, and
/// each page reads all the rows before it.
const PAGE_MAX: usize = 1000;

impl Paging {
    fn per(self) -> usize {
        self.per.unwrap_or(PER_PAGE).clamp(1, PER_PAGE_MAX)
    }

    fn page(self) -> usize {
        self.page.min(PAGE_MAX)
    }

    /// Rows to read to fill this page and know whether another follows.
    fn read(self) -> usize {
        (self.page() + 1) * self.per() + 1
    }

    /// This page's rows out of all read (newest first); whether older ones follow.
    fn cut<T>(self, mut rows: Vec<T>) -> (Vec<T>, bool) {
        let skip = self.page() * self.per();
        let more = rows.len() > skip + self.per();
        rows.truncate(skip + self.per());
        (rows.split_off(skip.min(rows.len())), more)
    }

    /// Links to the newer and older pages of `path` with the same filters.
    fn links(self, path: &str, filters: &[(&str, &str)], more: bool) -> (String, String) {
        let at = |page: usize| {
            let mut query: Vec<String> = filters
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={}", form_encode(v)))
                .collect();
            if self.per.is_some() {
                query.push(format!("per={}", self.per()));
            }
            query.push(format!("page={page}"));
            format!("{path}?{}", query.join("&"))
        };
        let newer = if self.page() > 0 {
            at(self.page() - 1)
        } else {
            String::new()
        };
        let older = if more && self.page() < PAGE_MAX {
            at(self.page() + 1)
        } else {
            String::new()
        };
        (newer, older)
    }
}

#[derive(Template)]
#[template(path = "review/list.html")]
struct ListPage {
    user: String,
    role: &'static str,
    held: Vec<Meta>,
    sender: String,
    recipient: String,
    rule: String,
    level: String,
    subject: String,
    since: String,
    until: String,
    notice: String,
    newer: String,
    older: String,
}

async fn list(
    State(app): State<Shared>,
    Viewer(user): Viewer,
    Query(q): Query<ListQuery>,
) -> Response {
    let paging = Paging {
        page: q.page,
        per: q.per,
    };
    let rule = given(&q.rule);
    let level = given(&q.level).map(|l| l.to_ascii_uppercase());
    let subject = given(&q.subject).map(|t| t.to_lowercase());
    // Rule, level and subject are matched here, so the store lists everything the
    // store-side filters let through and the page is cut from the matches (a limit
    // before these filters would hide older matches).
    let narrowed = rule.is_some() || level.is_some() || subject.is_some();
    let filter = HeldFilter {
        sender: (!q.sender.trim().is_empty()).then(|| AddressMatch::parse(&q.sender)),
        recipient: (!q.recipient.trim().is_empty()).then(|| AddressMatch::parse(&q.recipient)),
        since: given(&q.since),
        until: given(&q.until),
        limit: (!narrowed).then_some(paging.read()),
    };
    let store = app.gateway.store.clone();
    let (held, more) = match blocking(move || ops::list(&store, &filter)).await {
        Ok(Ok(mut held)) => {
            held.reverse();
            held.retain(|m| {
                rule.as_ref().is_none_or(|r| m.rule.as_ref() == Some(r))
                    && level
                        .as_ref()
                        .is_none_or(|l| m.level.eq_ignore_ascii_case(l))
                    && subject.as_ref().is_none_or(|t| {
                        m.subject
                            .as_ref()
                            .is_some_and(|s| s.to_lowercase().contains(t.as_str()))
                    })
            });
            paging.cut(held)
        }
        Ok(Err(err)) => return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
        Err(r) => return r,
    };
    let (newer, older) = paging.links(
        "/quarantine",
        &[
            ("sender", &q.sender),
            ("recipient", &q.recipient),
            ("rule", &q.rule),
            ("level", &q.level),
            ("subject", &q.subject),
            ("since", &q.since),
            ("until", &q.until),
        ],
        more,
    );
    let user_name = user.name.clone();
    page(ListPage {
        newer,
        older,
        user: user.name,
        role: user.role.name(),
        held,
        sender: q.sender,
        recipient: q.recipient,
        rule: q.rule,
        level: q.level,
        subject: q.subject,
        since: q.since,
        until: q.until,
        notice: if app.csrf.verify_signed(&user_name, &q.notice, &q.signed) {
            q.notice
        } else {
            String::new()
        },
    })
}

#[derive(Template)]
#[template(path = "review/message.html")]
struct MessagePage {
    user: String,
    role: &'static str,
    meta: Meta,
    description: String,
    /// The subject with the evidence marked.
    subject: Vec<reading::Segment>,
    /// Each text part as the classifier read it, evidence marked.
    parts: Vec<reading::TextPart>,
    attachments: Vec<reading::Attachment>,
    /// Why the parts are not shown, if the walk refused the structure.
    refused: String,
    /// Why the attachments are not listed, if so.
    unlisted: String,
    /// The raw source, as text.
    text: String,
    csrf: String,
    can_act: bool,
    can_force: bool,
    can_download: bool,
    error: String,
}

/// The most of a held message's raw source shown on its page.
const SHOWN: usize = 256 * 1024;

/// A message's header block, up to and including the blank line that ends it.
fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| message.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(message.len());
    &message[..end]
}

async fn message_page(app: &App, user: User, id: String, error: String) -> Response {
    let store = app.gateway.store.clone();
    let shown = match blocking(move || ops::show(&store, &id)).await {
        Ok(Ok(s)) => s,
        Ok(Err(err)) => return (StatusCode::NOT_FOUND, err.to_string()).into_response(),
        Err(r) => return r,
    };
    let snapshot = app.gateway.snapshot();
    let description = shown
        .meta
        .rule
        .as_deref()
        .and_then(|r| snapshot.policy.description(r))
        .unwrap_or_default();
    let evidence: Vec<String> = shown
        .meta
        .marking
        .evidence
        .iter()
        .map(|e| e.text.clone())
        .collect();
    let download_role = snapshot.config.review.download_role;
    let may_download = user.role >= download_role;
    let subject = shown.meta.subject.clone().unwrap_or_default();
    let (read, shown) = match blocking(move || {
        let texts: Vec<&str> = evidence.iter().map(String::as_str).collect();
        (
            reading::read(&shown.message, &subject, &texts, may_download),
            shown,
        )
    })
    .await
    {
        Ok(done) => done,
        Err(r) => return r,
    };
    // Below the download role the raw source is its header block only: the body holds
    // the attachments' bytes.
    let source = if may_download {
        &shown.message[..]
    } else {
        header_block(&shown.message)
    };
    let mut text = String::from_utf8_lossy(&source[..source.len().min(SHOWN)]).into_owned();
    if source.len() > SHOWN {
        text.push_str("\n[… the rest is not shown]");
    } else if source.len() < shown.message.len() {
        text.push_str("\n[the body is shown to the roles that may download attachments]");
    }
    page(MessagePage {
        subject: read.subject,
        parts: read.parts,
        attachments: read.attachments,
        refused: read.refused.unwrap_or_default(),
        unlisted: read.unlisted.unwrap_or_default(),
        can_download: may_download,
        csrf: app.csrf.token(&user.name),
        can_act: user.role >= Role::Reviewer,
        can_force: user.role >= Role::Admin,
        user: user.name,
        role: user.role.name(),
        meta: shown.meta,
        description,
        text,
        error,
    })
}

async fn message(
    State(app): State<Shared>,
    Viewer(user): Viewer,
    Path(id): Path<String>,
) -> Response {
    message_page(&app, user, id, String::new()).await
}

/// One attachment of a held message, to a role that may take it (`review.download_role`),
/// recorded before it is handed over and always as a file to save, never shown by the
/// browser.
async fn download(
    State(app): State<Shared>,
    Viewer(user): Viewer,
    Path((id, n)): Path<(String, usize)>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
) -> Response {
    if method != axum::http::Method::GET {
        // A HEAD would be recorded as a download and deliver nothing.
        return (StatusCode::METHOD_NOT_ALLOWED, "GET only\n").into_response();
    }
    if guard::cross_site(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "cross-site request refused: download from the console's own pages\n",
        )
            .into_response();
    }
    let need = app.gateway.snapshot().config.review.download_role;
    if user.role < need {
        return auth::Refused::role(need, user.role).into_response();
    }
    let store = app.gateway.store.clone();
    let actor = ops::Actor::new(Some(user.name.clone()), None);
    let taken = blocking(move || {
        let shown = ops::show(&store, &id).map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))?;
        let (name, mime, bytes) = reading::attachment(&shown.message, n).ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("held message {id} has no part {n}"),
            )
        })?;
        ops::downloaded(
            &store,
            &shown.meta,
            &format!("part {n}: {name} ({mime})"),
            &actor,
        )
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok::<_, (StatusCode, String)>((name, bytes))
    })
    .await;
    match taken {
        Ok(Ok((name, bytes))) => (
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/octet-stream".to_string(),
                ),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    attachment_disposition(&name),
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err((status, why))) => (status, format!("{why}\n")).into_response(),
        Err(r) => r,
    }
}

/// `attachment` with the name as plain ASCII (anything else, quotes, slashes and
/// separators replaced) and exactly as given in RFC 5987's `filename*`.
fn attachment_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' | '/' | ';' | '%' => '_',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '_',
        })
        .collect();
    format!(
        "attachment; filename=\"{plain}\"; filename*=UTF-8''{}",
        form_encode(name)
    )
}

#[derive(serde::Deserialize)]
struct ActForm {
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: Option<String>,
}

/// Who may act, with a reason and a form this console made for them.
fn act_check(app: &App, user: &User, form: &ActForm) -> Result<(), String> {
    if !app.csrf.verify(&user.name, &form.csrf) {
        return Err(
            "the form has expired or did not come from this console; reload the page".into(),
        );
    }
    if form.reason.trim().is_empty() {
        return Err("a reason is required".into());
    }
    Ok(())
}

async fn release(
    State(app): State<Shared>,
    Reviewer(user): Reviewer,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Response {
    if let Err(why) = act_check(&app, &user, &form) {
        return message_page(&app, user, id, why).await;
    }
    let force = form.force.is_some();
    if force && user.role < Role::Admin {
        return message_page(&app, user, id, "only an admin may force a release".into()).await;
    }
    let actor = ops::Actor::new(Some(user.name.clone()), Some(form.reason.clone()));
    let store = app.gateway.store.clone();
    let config = app.gateway.snapshot().config.clone();
    let key = id.clone();
    let done = blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(ops::release(&store, &config, &key, force, &actor))
            .map_err(|e| e.to_string())
    })
    .await;
    match done {
        Ok(Ok(released)) => notice(&app, &user, &format!("Released {id}: {}", released.reply)),
        Ok(Err(why)) => message_page(&app, user, id, why).await,
        Err(r) => r,
    }
}

async fn delete(
    State(app): State<Shared>,
    Reviewer(user): Reviewer,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Response {
    if let Err(why) = act_check(&app, &user, &form) {
        return message_page(&app, user, id, why).await;
    }
    let actor = ops::Actor::new(Some(user.name.clone()), Some(form.reason.clone()));
    let store = app.gateway.store.clone();
    let config = app.gateway.snapshot().config.clone();
    let key = id.clone();
    match blocking(move || ops::delete(&store, &config, &key, &actor).map_err(|e| e.to_string()))
        .await
    {
        Ok(Ok(_)) => notice(&app, &user, &format!("Deleted {id}")),
        Ok(Err(why)) => message_page(&app, user, id, why).await,
        Err(r) => r,
    }
}

/// Back to the list with `text` shown as this console's notice: signed for the user, so a
/// link from elsewhere cannot put words in the console's mouth.
fn notice(app: &App, user: &User, text: &str) -> Response {
    Redirect::to(&format!(
        "/quarantine?notice={}&signed={}",
        form_encode(text),
        app.csrf.sign(&user.name, text)
    ))
    .into_response()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(serde::Deserialize, Default)]
struct TraceQuery {
    #[serde(default)]
    sender: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    level: String,
    /// RFC 3339, inclusive.
    #[serde(default)]
    since: String,
    /// RFC 3339, exclusive.
    #[serde(default)]
    until: String,
    /// Which page, from 0 (serde's `flatten` would read numbers in a query as strings).
    #[serde(default)]
    page: usize,
    #[serde(default)]
    per: Option<usize>,
}

/// A form field as a filter: empty means "any".
fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// One tracking record as a table row, with what an analyst needs to say why: the rules
/// that matched (audit hits included), the marking's evidence, and the replies.
struct Row {
    time: String,
    sender: String,
    recipients: String,
    action: String,
    rule: String,
    level: String,
    by: String,
    reason: String,
    reply: String,
    subject: String,
    message_id: String,
    /// `rule (mode → action)` for every matched rule, in order.
    matched: Vec<String>,
    /// `source: text (level)` for every piece of marking evidence.
    evidence: Vec<String>,
    next_hop: String,
    error: String,
}

impl From<&crate::store::TrackingRecord> for Row {
    fn from(r: &crate::store::TrackingRecord) -> Row {
        Row {
            time: r.time.clone(),
            sender: r.sender.clone(),
            recipients: r.addresses().collect::<Vec<_>>().join(", "),
            action: format!("{} ({})", r.action, r.outcome),
            rule: r.rule.clone().unwrap_or_default(),
            level: r.level().to_string(),
            by: r
                .by
                .clone()
                .or_else(|| r.released_by.clone())
                .unwrap_or_default(),
            reason: r.reason.clone().unwrap_or_default(),
            reply: r.reply.clone().unwrap_or_default(),
            subject: r.subject.clone().unwrap_or_default(),
            message_id: r.message_id.clone().unwrap_or_default(),
            matched: r
                .matched
                .iter()
                .map(|m| format!("{} ({} → {})", m.id, m.mode, m.action))
                .collect(),
            evidence: r
                .marking
                .iter()
                .flat_map(|m| &m.evidence)
                .map(|e| format!("{}: {} ({})", e.source, e.text, e.level))
                .collect(),
            next_hop: r
                .next_hop
                .as_ref()
                .map(|n| n.reply.clone())
                .unwrap_or_default(),
            error: r.error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "review/trace.html")]
struct TracePage {
    user: String,
    role: &'static str,
    heading: &'static str,
    searchable: bool,
    sender: String,
    recipient: String,
    message_id: String,
    action: String,
    rule: String,
    level: String,
    since: String,
    until: String,
    records: Vec<Row>,
    error: String,
    newer: String,
    older: String,
}

async fn trace(
    State(app): State<Shared>,
    Viewer(user): Viewer,
    Query(q): Query<TraceQuery>,
) -> Response {
    let paging = Paging {
        page: q.page,
        per: q.per,
    };
    let query = crate::store::Query {
        sender: (!q.sender.trim().is_empty()).then(|| AddressMatch::parse(&q.sender)),
        recipient: (!q.recipient.trim().is_empty()).then(|| AddressMatch::parse(&q.recipient)),
        message_id: given(&q.message_id),
        action: given(&q.action),
        rule: given(&q.rule),
        level: given(&q.level),
        since: given(&q.since),
        until: given(&q.until),
        limit: Some(paging.read()),
        ..crate::store::Query::default()
    };
    let store = app.gateway.store.clone();
    let (records, more, error) = match blocking(move || ops::search(&store, &query)).await {
        Ok(Ok(found)) => {
            let (found, more) = paging.cut(found);
            (found.iter().map(Row::from).collect(), more, String::new())
        }
        Ok(Err(err)) => (Vec::new(), false, err.to_string()),
        Err(r) => return r,
    };
    let (newer, older) = paging.links(
        "/trace",
        &[
            ("sender", &q.sender),
            ("recipient", &q.recipient),
            ("message_id", &q.message_id),
            ("action", &q.action),
            ("rule", &q.rule),
            ("level", &q.level),
            ("since", &q.since),
            ("until", &q.until),
        ],
        more,
    );
    page(TracePage {
        newer,
        older,
        user: user.name,
        role: user.role.name(),
        heading: "Message trace",
        searchable: true,
        sender: q.sender,
        recipient: q.recipient,
        message_id: q.message_id,
        action: q.action,
        rule: q.rule,
        level: q.level,
        since: q.since,
        until: q.until,
        records,
        error,
    })
}

async fn audit(State(app): State<Shared>, Viewer(user): Viewer) -> Response {
    let store = app.gateway.store.clone();
    let found = blocking(move || {
        // Who released, deleted, purged or redacted what: the operations' own records.
        let mut all = Vec::new();
        for action in ["pass", "delete", "purge", "redact", "download"] {
            let q = crate::store::Query {
                action: Some(action.to_string()),
                limit: Some(1000),
                ..crate::store::Query::default()
            };
            all.extend(
                ops::search(&store, &q)?
                    .into_iter()
                    .filter(|r| action != "pass" || r.outcome == "released"),
            );
        }
        all.sort_by(|a, b| b.time.cmp(&a.time));
        Ok::<_, crate::store::SearchError>(all)
    })
    .await;
    let (records, error) = match found {
        Ok(Ok(found)) => (found.iter().map(Row::from).collect(), String::new()),
        Ok(Err(err)) => (Vec::new(), err.to_string()),
        Err(r) => return r,
    };
    page(TracePage {
        user: user.name,
        role: user.role.name(),
        heading: "Audit",
        searchable: false,
        sender: String::new(),
        recipient: String::new(),
        message_id: String::new(),
        action: String::new(),
        rule: String::new(),
        level: String::new(),
        since: String::new(),
        until: String::new(),
        records,
        error,
        newer: String::new(),
        older: String::new(),
    })
}
