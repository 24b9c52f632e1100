//! A web app over a small generated borough, and a cookie-keeping client that drives its
//! router in process (the browser test drives a real listener).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use riskid::app::{App, FeedBody, Limits, ProposeInput};
use riskid::auth::{Principal, Role, generate_key};
use riskid::cohort::{CohortParams, Policy};
use riskid::domain::{SchoolTerm, Term, Upn, Urn};
use riskid::storage::{NewKey, Store, now_unix};
use riskid::synth::{World, WorldConfig, feed_csv, generate};
use riskid::web::{Web, WebConfig};
use tower::ServiceExt;

pub struct TestWeb {
    pub app: Arc<App>,
    pub store: Arc<Store>,
    pub web: Arc<Web>,
    pub world: World,
    pub router: Router,
    pub _dir: tempfile::TempDir,
}

pub fn key(store: &Store, role: Role, schools: &[Urn], label: &str) -> String {
    let (k, hash, prefix) = generate_key();
    let schools: BTreeSet<Urn> = schools.iter().copied().collect();
    store
        .create_key(
            &NewKey { key_hash: &hash, prefix: &prefix, role, schools: &schools, label, created_at: now_unix() },
            "operator:test",
        )
        .unwrap();
    k
}

impl TestWeb {
    /// Two schools, one year of feeds, stored and scored; no cohort yet.
    pub async fn new() -> Self {
        Self::with(WebConfig::default()).await
    }

    pub async fn with(config: WebConfig) -> Self {
        Self::with_limits(config, Limits::default()).await
    }

    pub async fn with_limits(config: WebConfig, limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let app = Arc::new(App::new(store.clone(), limits).unwrap());
        let world = generate(&WorldConfig {
            schools: 2,
            years: 1,
            seed: 5,
            primary_year_size: 12,
            secondary_year_size: 24,
            ..Default::default()
        })
        .unwrap();
        let uploader = key(&store, Role::School, &world.schools.iter().map(|s| s.urn).collect::<Vec<_>>(), "loader");
        let p = app.authenticate(&uploader).await.unwrap();
        for f in &world.feeds {
            let pass = p.may_submit(f.urn).unwrap();
            app.submit_feed(pass, f.term, FeedBody::Csv(feed_csv(&f.rows)), None, false).await.unwrap();
        }
        let web = Web::new(app.clone(), config);
        let router = riskid::web::router(web.clone());
        Self { app, store, web, world, router, _dir: dir }
    }

    pub fn urn(&self, i: usize) -> Urn {
        self.world.schools[i].urn
    }

    pub fn latest(&self) -> Term {
        *self.world.terms.last().unwrap()
    }

    pub fn key(&self, role: Role, schools: &[Urn], label: &str) -> String {
        key(&self.store, role, schools, label)
    }

    pub async fn principal(&self, key: &str) -> Principal {
        self.app.authenticate(key).await.unwrap()
    }

    /// Proposes school `i`'s cohort for the latest term as a link worker; returns its id.
    pub async fn propose(&self, i: usize, capacity: usize) -> i64 {
        let k = self.key(Role::LinkWorker, &[self.urn(i)], "proposer");
        let p = self.principal(&k).await;
        let params = CohortParams { capacity, min_year: 0, max_year: 13, policy: Policy::AnyAdverse, seed: 1 };
        let st = SchoolTerm { urn: self.urn(i), term: self.latest() };
        self.app
            .propose_cohort(&p, ProposeInput { school_term: st, params, force: false, request_id: None })
            .await
            .unwrap()
            .id
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn client(&self) -> Client {
        Client { router: self.router.clone(), cookies: HashMap::new() }
    }

    /// A signed-in client for a new key of this role.
    pub async fn signed_in(&self, role: Role, schools: &[Urn]) -> Client {
        let k = self.key(role, schools, &format!("test {role}"));
        let mut c = self.client();
        let r = c.sign_in(&k).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        c
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    /// The first CSRF token in the page's forms.
    pub fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }
    /// Every `href` and form `action` in the page.
    pub fn links(&self) -> Vec<String> {
        let mut out = Vec::new();
        for attr in ["href=\"", "action=\""] {
            let mut rest = self.body.as_str();
            while let Some(i) = rest.find(attr) {
                rest = &rest[i + attr.len()..];
                out.push(rest.split('"').next().unwrap().to_owned());
            }
        }
        out
    }
}

pub struct Client {
    router: Router,
    pub cookies: HashMap<String, String>,
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

impl Client {
    pub async fn send(&mut self, req: http::request::Builder, body: Body) -> Resp {
        let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let req = if cookie.is_empty() { req } else { req.header(header::COOKIE, cookie.join("; ")) };
        let resp = self.router.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for v in headers.get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") || val.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap();
        Resp { status, headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(Request::get(path), Body::empty()).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let req = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.send(req, Body::from(encode(form))).await
    }

    /// Posts with the CSRF token of the page at `from`.
    pub async fn post_from(&mut self, from: &str, path: &str, form: &[(&str, &str)]) -> Resp {
        let token = self.get(from).await.csrf();
        let mut f = form.to_vec();
        f.push(("csrf", &token));
        self.post(path, &f).await
    }

    pub async fn multipart(&mut self, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Resp {
        let boundary = "riskidtestboundary7d1f";
        let mut body = Vec::new();
        for (name, filename, data) in fields {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/csv\r\n\r\n")
                        .as_bytes(),
                ),
                None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = Request::post(path).header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"));
        self.send(req, Body::from(body)).await
    }

    pub async fn sign_in(&mut self, key: &str) -> Resp {
        let page = self.get("/login").await;
        let token = page.csrf();
        self.post("/login", &[("key", key), ("csrf", &token)]).await
    }
}

/// Whether a text holds something that reads as a UPN.
pub fn holds_upn(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 13 && (0..=b.len() - 13).any(|i| std::str::from_utf8(&b[i..i + 13]).is_ok_and(|w| Upn::parse(w).is_ok()))
}

/// The value of a page's hidden field.
pub fn hidden(body: &str, name: &str) -> String {
    let at = format!("name=\"{name}\" value=\"");
    body.split(at.as_str()).nth(1).expect("the hidden field").split('"').next().unwrap().to_owned()
}
