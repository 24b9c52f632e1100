//! The web app: server-rendered pages for link workers, school data managers and analysts,
//! on a second listener (`--web-listen`). The pages call the same use cases as the gRPC API,
//! under the same role table (`auth::UseCase`); a signed-in browser holds a session cookie,
//! never the key.
//!
//! Security: sessions are random 256-bit tokens (stored hashed) with idle and absolute
//! expiry; every form that changes state carries the session's CSRF token; sign-in attempts
//! are rate-limited per address; every reply carries a Content-Security-Policy that allows
//! nothing but this origin's own stylesheet (no script runs). Pupils are addressed by opaque
//! ids (a keyed hash of the UPN), so no UPN reaches a URL, a log or browser history.

mod analyst;
mod charts;
mod cohorts;
mod feeds;
mod session;
mod views;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::app::{App, AppError};
use crate::auth::Role;
use crate::domain::Upn;

pub use session::{PER_KEY as SESSIONS_PER_KEY, Signed};

/// How the web app behaves: cookie security and session lifetimes.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Cookies are marked `Secure` and `__Host-`, with HSTS (set when the listener speaks TLS,
    /// or with `--web-secure-cookies` behind a TLS-terminating proxy).
    pub secure_cookies: bool,
    /// A session unused for this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however busy.
    pub absolute_timeout: Duration,
    /// Sign-in attempts allowed per client address per minute.
    pub sign_in_per_minute: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            secure_cookies: false,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(8 * 3600),
            sign_in_per_minute: 10,
        }
    }
}

/// The web app's state: the application, sessions, and the key for pupils' opaque ids.
pub struct Web {
    app: Arc<App>,
    config: WebConfig,
    sessions: session::Sessions,
    sign_ins: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
    /// Keys the opaque pupil ids.
    pid_key: [u8; 32],
}

/// The client's address, put in each request by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Web {
    pub fn new(app: Arc<App>, config: WebConfig) -> Arc<Self> {
        // Derived (one way) from the store's secret key, so a pupil's id is the same after a
        // restart and on every server of one store, and says nothing without the key.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(app.store().audit_key().bytes()).expect("any key length");
        m.update(b"riskid web: opaque pupil ids v1");
        let pid_key: [u8; 32] = m.finalize().into_bytes().into();
        Arc::new(Self {
            app,
            config,
            sessions: session::Sessions::default(),
            sign_ins: Mutex::new(HashMap::new()),
            pid_key,
        })
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The opaque id by which pages address a pupil.
    pub fn pid(&self, upn: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.pid_key).expect("any key length");
        m.update(upn.as_bytes());
        format!("p{}", hex::encode(&m.finalize().into_bytes()[..10]))
    }

    /// The pupil among `upns` with this opaque id.
    pub fn find_pid<'a, I: IntoIterator<Item = &'a str>>(&self, upns: I, pid: &str) -> Option<Upn> {
        upns.into_iter().find(|u| self.pid(u) == pid).and_then(|u| Upn::parse(u).ok())
    }

    /// Ages every session by `by`, as if that time had passed (for tests of expiry).
    pub fn age_sessions(&self, by: Duration) {
        self.sessions.age(by);
    }

    /// Sessions open now.
    pub fn sessions_open(&self) -> usize {
        self.sessions.count()
    }

    /// Counts a sign-in attempt from `ip`; false when the address has used its minute's share.
    /// IPv6 addresses count by their /64 (one host can hold a whole /64). The table is bounded:
    /// when it is full of live entries, attempts from new addresses are refused (fail closed).
    fn sign_in_allowed(&self, ip: std::net::IpAddr) -> bool {
        const MAX_ADDRESSES: usize = 50_000;
        let ip = match ip {
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        };
        let mut m = self.sign_ins.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        if let Some(e) = m.get_mut(&ip) {
            if now.duration_since(e.0) >= minute {
                *e = (now, 0);
            }
            e.1 += 1;
            return e.1 <= self.config.sign_in_per_minute;
        }
        if m.len() >= MAX_ADDRESSES {
            m.retain(|_, (start, _)| now.duration_since(*start) < minute);
            if m.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        m.insert(ip, (now, 1));
        1 <= self.config.sign_in_per_minute
    }
}

/// The page's frame: who is signed in, the navigation for their role, the CSRF token.
pub struct Frame {
    pub title: String,
    pub role: Option<Role>,
    pub label: String,
    pub csrf: String,
    pub nav: Vec<(&'static str, &'static str, bool)>,
}

impl Frame {
    pub fn new(title: impl Into<String>, who: Option<&Signed>, here: &str) -> Self {
        let nav: &[(&str, &str)] = match who.map(|s| s.principal.role) {
            Some(Role::LinkWorker) => {
                &[("/cohorts", "Cohorts"), ("/risks", "Pupils' scores"), ("/outcomes", "Outcomes")]
            }
            Some(Role::School) => {
                &[("/feeds", "Feeds"), ("/risks", "Pupils' scores"), ("/cohorts", "Cohorts"), ("/outcomes", "Outcomes")]
            }
            Some(Role::Analyst) => &[
                ("/models", "Models"),
                ("/cohorts", "Cohorts"),
                ("/reports/overrides", "Overrides"),
                ("/outcomes", "Outcomes"),
                ("/audit", "Audit"),
            ],
            Some(Role::Admin) => &[("/audit", "Audit"), ("/outcomes", "Outcomes")],
            _ => &[],
        };
        Self {
            title: title.into(),
            role: who.map(|s| s.principal.role),
            label: who.map(|s| s.label.clone()).unwrap_or_default(),
            csrf: who.map(|s| s.csrf.clone()).unwrap_or_default(),
            nav: nav.iter().map(|(href, name)| (*href, *name, here.starts_with(href))).collect(),
        }
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Some(Role::LinkWorker) => "Link worker",
            Some(Role::School) => "School data manager",
            Some(Role::Analyst) => "Analyst",
            Some(Role::Admin) => "Administrator",
            Some(Role::Service) => "Service",
            None => "",
        }
    }
}

/// A page's error summary entry: what went wrong and which field (for the link).
#[derive(Debug, Clone)]
pub struct FormError {
    pub field: String,
    pub message: String,
}

impl FormError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    frame: Frame,
    heading: String,
    message: String,
}

/// A failure shown as a page: the status and words for a person.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub heading: &'static str,
    pub message: String,
}

impl WebError {
    pub fn new(status: StatusCode, heading: &'static str, message: impl Into<String>) -> Self {
        Self { status, heading, message: message.into() }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Page not found", format!("There is no {what} here, or you may not see it."))
    }
}

impl From<AppError> for WebError {
    fn from(e: AppError) -> Self {
        use AppError::*;
        let (status, heading) = match &e {
            BadFields { .. } | BadField { .. } | FeedRejected { .. } => (StatusCode::BAD_REQUEST, "There is a problem"),
            Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "Sign in again"),
            PermissionDenied(_) => (StatusCode::FORBIDDEN, "You cannot do this"),
            NotFound { .. } => (StatusCode::NOT_FOUND, "Not found"),
            Conflict { .. } => (StatusCode::CONFLICT, "This cannot be done now"),
            Aborted { .. } => (StatusCode::CONFLICT, "Someone else changed this"),
            NotReady(_) | Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "Try again shortly"),
            TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "The file is too large"),
            Store(_) | Internal(_) | Edge(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Sorry, something went wrong"),
        };
        let message = match &e {
            Store(_) | Internal(_) | Edge(_) => {
                // The cause is for the operator's log (it names no pupil); the person gets a plain line.
                tracing::error!(error = %e, "web request failed");
                "The server could not complete this. Nothing was changed; try again, and tell your administrator if it \
                 keeps happening."
                    .to_string()
            }
            PermissionDenied(a) => format!("Your sign-in does not allow this: {a}."),
            _ => e.to_string(),
        };
        Self { status, heading, message }
    }
}

impl From<crate::auth::AccessError> for WebError {
    fn from(e: crate::auth::AccessError) -> Self {
        AppError::from(e).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            frame: Frame::new(self.heading, None, ""),
            heading: self.heading.into(),
            message: self.message,
        };
        (self.status, html(&page)).into_response()
    }
}

pub type WebResult<T> = Result<T, WebError>;

/// Renders a template (templates are checked at compile time; rendering fails only on a
/// formatting error, which is a bug).
pub fn html(t: &impl Template) -> Response {
    match t.render() {
        Ok(s) => Html(s).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

/// A 303 to another page after a change (so a reload does not repeat it).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every reply; pages are never cached (they show children's data). A
/// refusal made by the framework itself (a wrong method, an unreadable form) and a panic
/// become pages too, never plain text or a dropped connection.
async fn headers(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    use futures::FutureExt;
    let mut resp = match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("a web handler panicked");
            WebError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sorry, something went wrong",
                "The server could not complete this. Try again, and tell your administrator if it keeps happening.",
            )
            .into_response()
        }
    };
    let status = resp.status();
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html") || v.starts_with("text/css"));
    if (status.is_client_error() || status.is_server_error()) && !is_html {
        let (heading, message) = match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                ("Page not found", "There is no page here for that kind of request.".to_string())
            }
            StatusCode::PAYLOAD_TOO_LARGE => (
                "The file is too large",
                "The upload is larger than this server accepts; nothing was stored.".to_string(),
            ),
            s if s.is_client_error() => {
                ("There is a problem", "The request could not be read. Go back and try again.".to_string())
            }
            _ => ("Sorry, something went wrong", "The server could not complete this. Try again shortly.".to_string()),
        };
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = WebError::new(status, heading, message).into_response();
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if web.config.secure_cookies {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

const CSS: &str = include_str!("../../static/riskid.css");

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], CSS)
        .into_response()
}

async fn home(State(web): State<Arc<Web>>, who: Option<Signed>) -> Response {
    let _ = web;
    match who.map(|s| s.principal.role) {
        None => see_other("/login"),
        Some(Role::LinkWorker) => see_other("/cohorts"),
        Some(Role::School) => see_other("/feeds"),
        Some(Role::Analyst) => see_other("/models"),
        Some(Role::Admin) => see_other("/audit"),
        Some(Role::Service) => WebError::new(
            StatusCode::FORBIDDEN,
            "This key is for systems",
            "Service keys call the gRPC API; they have no pages. Sign out and use a person's key.",
        )
        .into_response(),
    }
}

async fn not_found() -> WebError {
    WebError::not_found("page")
}

/// Every page and action.
pub fn router(web: Arc<Web>) -> Router {
    // The feed and its supplement together, as over gRPC, plus the form's small fields.
    let upload_limit = web.app.limits().max_feed_bytes.saturating_add(64 << 10);
    Router::new()
        .route("/", get(home))
        .route("/static/riskid.css", get(stylesheet))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/cohorts", get(cohorts::list))
        .route("/cohorts/propose", post(cohorts::propose))
        .route("/cohorts/{id}", get(cohorts::show))
        .route("/cohorts/{id}/members/{pid}", get(cohorts::member))
        .route("/cohorts/{id}/members/{pid}/decide", post(cohorts::decide))
        .route("/cohorts/{id}/members/{pid}/undo", post(cohorts::undo))
        .route("/cohorts/{id}/find", post(cohorts::find))
        .route("/cohorts/{id}/add", post(cohorts::add))
        .route("/cohorts/{id}/finalise", post(cohorts::finalise))
        .route("/risks", get(feeds::risks))
        .route("/risks/{urn}/{term}/{pid}", get(feeds::pupil))
        .route("/feeds", get(feeds::list).post(feeds::upload).layer(axum::extract::DefaultBodyLimit::max(upload_limit)))
        .route("/feeds/{id}", get(feeds::submission))
        .route("/models", get(analyst::models))
        .route("/models/{id}", get(analyst::model))
        .route("/models/{id}/evaluate", post(analyst::evaluate))
        .route("/models/{id}/activate", post(analyst::activate))
        .route("/reports/overrides", get(analyst::overrides))
        .route("/audit", get(analyst::audit))
        .route("/outcomes", get(analyst::outcomes))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(web.clone(), headers))
        .with_state(web)
}

/// The TLS configuration for the web listener, from the same PEM files as gRPC.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Most web connections open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// The longest a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the web app on `listener` (over TLS when `tls` is given) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    web: Arc<Web>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;
    let router = router(web);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Connections open at once: beyond this a new one is closed at once (fail closed).
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "web accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!("web connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let _slot = slot;
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that sends its headers slowly (or not at all) is dropped.
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let served = match acceptor {
                Some(a) => match tokio::time::timeout(Duration::from_secs(10), a.accept(tcp)).await {
                    Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc)).await,
                    _ => return,
                },
                None => builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(svc)).await,
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "web connection ended");
            }
        });
    }
}
