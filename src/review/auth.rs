//! Who is asking: a trusted reverse proxy (an address in `review.trusted_proxies`) says so
//! in `X-Forwarded-User` and `X-Forwarded-Groups`, or, with `review.tls.client_ca`, the
//! client certificate's subject does through `review.tls.client_users`; the groups map to
//! a role. Anything else is refused. Forms carry a token only this process makes for that user (HMAC of the user
//! under a key made at start-up), so another site cannot post a release in a reviewer's
//! browser.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::listener::Peer;
use crate::gateway::Gateway;

pub use crate::config::Role;

pub struct User {
    pub name: String,
    pub role: Role,
}

/// A request the console will not serve, and why.
pub struct Refused(StatusCode, String);

impl Refused {
    /// The server was not given the peer's address (it always is, by `serve`).
    pub fn no_peer() -> Refused {
        Refused(StatusCode::FORBIDDEN, "no peer address".into())
    }

    /// The user's role is below what the request needs.
    pub fn role(need: Role, has: Role) -> Refused {
        Refused(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {} role; you are a {}",
                need.name(),
                has.name()
            ),
        )
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn refuse(code: StatusCode, why: &str) -> Refused {
    Refused(code, why.to_string())
}

/// The user behind a request, holding at least `need`; otherwise the refusal to send.
pub fn user(
    gateway: &Gateway,
    peer: &Peer,
    headers: &HeaderMap,
    need: Role,
) -> Result<User, Refused> {
    let snapshot = gateway.snapshot();
    let review = &snapshot.config.review;
    if let Some(tls) = review.tls.as_ref().filter(|t| t.client_ca.is_some()) {
        // Client certificates sign people in: the proxy's headers are not read.
        let Some(subject) = &peer.subject else {
            return Err(refuse(StatusCode::UNAUTHORIZED, "no client certificate"));
        };
        let Some(known) = tls.client_users.get(subject) else {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                &format!("certificate subject {subject} is not in review.tls.client_users"),
            ));
        };
        let groups: Vec<&str> = known.groups.iter().map(String::as_str).collect();
        return with_role(review, &known.user, &groups, need);
    }
    if !review
        .trusted_proxies
        .iter()
        .any(|n| n.contains(peer.addr.ip()))
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the review console is served only through the trusted proxy (review.trusted_proxies)",
        ));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(name) = header("x-forwarded-user") else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "no X-Forwarded-User from the proxy: sign in through it",
        ));
    };
    // Printable ASCII names only: they go into records and headers.
    if !name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') || name.len() > 200 {
        return Err(refuse(StatusCode::BAD_REQUEST, "unusable user name"));
    }
    let groups: Vec<&str> = header("x-forwarded-groups")
        .map(|g| {
            g.split([',', ' '])
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .collect()
        })
        .unwrap_or_default();
    with_role(review, name, &groups, need)
}

/// `name` in `groups`, if one of them holds a role of at least `need`.
fn with_role(
    review: &crate::config::ReviewConfig,
    name: &str,
    groups: &[&str],
    need: Role,
) -> Result<User, Refused> {
    let has = |list: &[String]| list.iter().any(|g| groups.contains(&g.as_str()));
    let role = if has(&review.roles.admin) {
        Role::Admin
    } else if has(&review.roles.reviewer) {
        Role::Reviewer
    } else if has(&review.roles.viewer) {
        Role::Viewer
    } else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "none of your groups holds a review role (review.roles)",
        ));
    };
    if role < need {
        return Err(Refused::role(need, role));
    }
    Ok(User {
        name: name.to_string(),
        role,
    })
}

/// The key form tokens are made with; new at every start (a restart expires open forms).
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    pub fn new() -> std::io::Result<CsrfKey> {
        let mut key = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
        Ok(CsrfKey(key))
    }

    pub fn token(&self, user: &str) -> String {
        hex(&crate::store::files::privacy::hmac(
            &self.0,
            user.as_bytes(),
        ))
    }

    /// A signature on `text` for `user` (the notice after an action).
    pub fn sign(&self, user: &str, text: &str) -> String {
        hex(&crate::store::files::privacy::hmac(
            &self.0,
            format!("notice\n{user}\n{text}").as_bytes(),
        ))
    }

    pub fn verify_signed(&self, user: &str, text: &str, signature: &str) -> bool {
        same(&self.sign(user, text), signature)
    }

    pub fn verify(&self, user: &str, token: &str) -> bool {
        same(&self.token(user), token)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in time that does not depend on where they differ.
fn same(want: &str, token: &str) -> bool {
    want.len() == token.len()
        && want
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
