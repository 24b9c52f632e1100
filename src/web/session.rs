//! Sign-in, sessions and CSRF tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{FormError, Frame, Peer, Web, WebError, html, see_other};
use crate::auth::{Principal, Role};

/// Cookie names. Under TLS they carry the `__Host-` prefix, so a sibling subdomain cannot
/// plant them (the browser then requires `Secure`, `Path=/` and no `Domain`).
fn session_cookie(web: &Web) -> &'static str {
    if web.config.secure_cookies { "__Host-riskid_session" } else { "riskid_session" }
}

/// Ties the sign-in form to the browser that loaded it (login CSRF).
fn login_cookie(web: &Web) -> &'static str {
    if web.config.secure_cookies { "__Host-riskid_signin" } else { "riskid_signin" }
}

struct Session {
    /// The API key's hash (never the key): each request re-checks it, so revoking the key
    /// ends the session at once.
    key_hash: String,
    key_id: i64,
    label: String,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// Live sessions, bounded: a key holds at most [`PER_KEY`] (signing in again ends the
/// oldest), and the server at most [`MAX_SESSIONS`].
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
    pruned: Mutex<Option<Instant>>,
}

pub const PER_KEY: usize = 10;
pub const MAX_SESSIONS: usize = 20_000;

fn token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equal, in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Drops ended sessions, at most once a second (not on every request).
    fn prune(&self, m: &mut HashMap<String, Session>, idle: Duration, absolute: Duration) {
        let now = Instant::now();
        let mut last = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) && m.len() < MAX_SESSIONS {
            return;
        }
        *last = Some(now);
        m.retain(|_, s| live(s, now, idle, absolute));
    }

    /// A new session for the key, or `None` when the server holds as many as it may.
    fn create(
        &self,
        key_hash: String,
        key_id: i64,
        label: String,
        idle: Duration,
        absolute: Duration,
    ) -> Option<String> {
        let t = token();
        let now = Instant::now();
        let mut m = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut m, idle, absolute);
        // The key's oldest sessions end when it has its share.
        let mut mine: Vec<(Instant, String)> =
            m.iter().filter(|(_, s)| s.key_id == key_id).map(|(h, s)| (s.created, h.clone())).collect();
        if mine.len() >= PER_KEY {
            mine.sort();
            for (_, h) in &mine[..=mine.len() - PER_KEY] {
                m.remove(h);
            }
        }
        if m.len() >= MAX_SESSIONS {
            return None;
        }
        m.insert(digest(&t), Session { key_hash, key_id, label, csrf: token(), created: now, last_seen: now });
        Some(t)
    }

    /// The session's key hash, label and CSRF token, if it is live; touches it.
    fn get(&self, t: &str, idle: Duration, absolute: Duration) -> Option<(String, String, String)> {
        let mut m = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut m, idle, absolute);
        let now = Instant::now();
        let d = digest(t);
        let s = m.get_mut(&d)?;
        if !live(s, now, idle, absolute) {
            m.remove(&d);
            return None;
        }
        s.last_seen = now;
        Some((s.key_hash.clone(), s.label.clone(), s.csrf.clone()))
    }

    fn remove(&self, t: &str) {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest(t));
    }

    pub fn age(&self, by: Duration) {
        let mut m = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        for s in m.values_mut() {
            s.created = s.created.checked_sub(by).unwrap_or(s.created);
            s.last_seen = s.last_seen.checked_sub(by).unwrap_or(s.last_seen);
        }
    }

    pub fn count(&self) -> usize {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn live(s: &Session, now: Instant, idle: Duration, absolute: Duration) -> bool {
    now.duration_since(s.last_seen) < idle && now.duration_since(s.created) < absolute
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(web: &Web, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if web.config.secure_cookies { "; Secure" } else { "" };
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"))
        .expect("cookie is ASCII")
}

/// A signed-in person: their principal (re-authenticated on this request), the key's label
/// and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Signed {
    pub principal: Principal,
    pub label: String,
    pub csrf: String,
}

impl Signed {
    /// Refuses a state-changing request whose form does not carry this session's token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        if same(sent, &self.csrf) {
            Ok(())
        } else {
            Err(WebError::new(
                StatusCode::FORBIDDEN,
                "The form has expired",
                "This form was not sent from a page of this session (its security token is missing or wrong). Go \
                 back, reload the page and try again.",
            ))
        }
    }
}

/// Not signed in: a page goes to the sign-in form, saying why when the session ended.
pub enum SignInFirst {
    NotSignedIn,
    Ended(HeaderValue),
    /// The key could not be checked (the store is busy): the session is kept.
    Unavailable,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        match self {
            SignInFirst::NotSignedIn => see_other("/login"),
            SignInFirst::Ended(clear) => {
                let mut r = see_other("/login?ended=1");
                r.headers_mut().insert(header::SET_COOKIE, clear);
                r
            }
            SignInFirst::Unavailable => WebError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The server is busy and could not check your sign-in. You are still signed in: go back and send the \
                 form again in a moment.",
            )
            .into_response(),
        }
    }
}

async fn resolve(parts: &Parts, web: &Arc<Web>) -> Result<Option<Signed>, SignInFirst> {
    let name = session_cookie(web);
    let Some(t) = cookie(&parts.headers, name).filter(|t| !t.is_empty()) else { return Ok(None) };
    let ended = || SignInFirst::Ended(set_cookie(web, name, "", Some(0)));
    let Some((key_hash, label, csrf)) = web.sessions.get(t, web.config.idle_timeout, web.config.absolute_timeout)
    else {
        return Err(ended());
    };
    match web.app.authenticate_hash(key_hash).await {
        Ok(principal) => Ok(Some(Signed { principal, label, csrf })),
        // Revoked since sign-in: the session ends.
        Err(crate::app::AppError::Unauthenticated { .. }) => {
            web.sessions.remove(t);
            Err(ended())
        }
        Err(e) => {
            tracing::warn!(error = %e, "a web session's key could not be checked");
            Err(SignInFirst::Unavailable)
        }
    }
}

impl FromRequestParts<Arc<Web>> for Signed {
    type Rejection = SignInFirst;
    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Self::Rejection> {
        resolve(parts, web).await?.ok_or(SignInFirst::NotSignedIn)
    }
}

impl OptionalFromRequestParts<Arc<Web>> for Signed {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Option<Self>, Self::Rejection> {
        Ok(resolve(parts, web).await.ok().flatten())
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    frame: Frame,
    errors: Vec<FormError>,
    ended: bool,
    signed_out: bool,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    out: Option<String>,
}

fn login_form(web: &Web, errors: Vec<FormError>, ended: bool, signed_out: bool, status: StatusCode) -> Response {
    let t = token();
    let mut frame = Frame::new("Sign in", None, "/login");
    frame.csrf = t.clone();
    let mut r = (status, html(&LoginPage { frame, errors, ended, signed_out })).into_response();
    r.headers_mut().insert(header::SET_COOKIE, set_cookie(web, login_cookie(web), &t, Some(3600)));
    r
}

/// The sign-in form again with one problem, its status, and a Retry-After when waiting helps.
fn refused(web: &Web, message: &str, status: StatusCode) -> Response {
    let mut r = login_form(web, vec![FormError::new("key", message)], false, false, status);
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    r
}

pub async fn login_page(State(web): State<Arc<Web>>, Query(q): Query<LoginQuery>) -> Response {
    login_form(&web, Vec::new(), q.ended.is_some(), q.out.is_some(), StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(web): State<Arc<Web>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !cookie(&headers, login_cookie(&web)).is_some_and(|c| same(c, &f.csrf)) {
        return refused(&web, "The sign-in form had expired. Enter your key again.", StatusCode::FORBIDDEN);
    }
    // Counted only once the form is this browser's own, so posts from another site cannot
    // use up a school's share.
    let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0.0.ip());
    if !web.sign_in_allowed(ip) {
        return refused(
            &web,
            "Too many sign-in attempts from this address. Wait a minute and try again.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let key = f.key.trim().to_owned();
    if key.is_empty() {
        return refused(&web, "Enter your API key", StatusCode::BAD_REQUEST);
    }
    let principal = match web.app.authenticate(&key).await {
        Ok(p) => p,
        Err(_) => {
            tracing::info!("web sign-in refused: unknown or revoked key");
            return refused(&web, "That key is not valid, or it has been revoked", StatusCode::UNAUTHORIZED);
        }
    };
    if principal.role == Role::Service {
        return refused(
            &web,
            "That is a service key, for systems calling the API. Use a person's key.",
            StatusCode::FORBIDDEN,
        );
    }
    let label = web
        .app
        .key_label(principal.key_id)
        .await
        .unwrap_or_else(|| format!("{} key {}", principal.role, principal.key_id));
    tracing::info!(key_id = principal.key_id, role = %principal.role, "web sign-in");
    let (idle, absolute) = (web.config.idle_timeout, web.config.absolute_timeout);
    let Some(t) = web.sessions.create(crate::auth::hash_key(&key), principal.key_id, label, idle, absolute) else {
        return refused(
            &web,
            "The server has as many people signed in as it allows. Try again later.",
            StatusCode::SERVICE_UNAVAILABLE,
        );
    };
    let mut r = see_other("/");
    r.headers_mut().append(header::SET_COOKIE, set_cookie(&web, session_cookie(&web), &t, None));
    r.headers_mut().append(header::SET_COOKIE, set_cookie(&web, login_cookie(&web), "", Some(0)));
    r
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(State(web): State<Arc<Web>>, who: Signed, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Err(e) = who.check_csrf(&f.csrf) {
        return e.into_response();
    }
    if let Some(t) = cookie(&headers, session_cookie(&web)) {
        web.sessions.remove(t);
    }
    let mut r = see_other("/login?out=1");
    r.headers_mut().insert(header::SET_COOKIE, set_cookie(&web, session_cookie(&web), "", Some(0)));
    r
}
