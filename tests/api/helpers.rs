use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use riskid::api::pb::{self, feed_service_client::FeedServiceClient};
use riskid::app::{App, Limits};
use riskid::auth::{Role, generate_key};
use riskid::client::{Authed, Bearer, submission_stream};
use riskid::domain::{Term, Urn, check_letter};
use riskid::storage::{NewKey, Store, now_unix};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub const SCHOOL_A: u32 = 100001;
pub const SCHOOL_B: u32 = 100002;

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub app: Arc<App>,
    pub _dir: TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Limits::default()).await
}

pub async fn spawn_app_with(limits: Limits) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let app = Arc::new(App::new(store.clone(), limits).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(riskid::server::serve(listener, app.clone(), None, async {
        let _ = rx.await;
    }));
    TestApp { addr, store, app, _dir: dir, _shutdown: tx }
}

impl TestApp {
    /// Creates a key directly in the store, as `riskid keys create` does.
    pub fn key(&self, role: Role, schools: &[u32]) -> String {
        let (key, hash, prefix) = generate_key();
        let schools: BTreeSet<Urn> = schools.iter().map(|&u| Urn::new(u).unwrap()).collect();
        self.store
            .create_key(
                &NewKey {
                    key_hash: &hash,
                    prefix: &prefix,
                    role,
                    schools: &schools,
                    label: "test",
                    created_at: now_unix(),
                },
                "operator:test",
            )
            .unwrap();
        key
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    pub async fn feed(&self, key: &str) -> FeedServiceClient<Authed> {
        FeedServiceClient::with_interceptor(self.channel().await, bearer(key))
    }

    pub fn stored_rows(&self) -> usize {
        self.store.all_current_rows().unwrap().len()
    }
}

pub fn bearer(key: &str) -> Bearer {
    Bearer::new(key)
}

pub fn term(year: &str, name: &str) -> Term {
    Term::parse(year, name).unwrap()
}

pub fn header(urn: u32, t: Term) -> pb::SubmissionHeader {
    pb::SubmissionHeader {
        school_term: Some(riskid::api::school_term_pb(Urn::new(urn).unwrap(), t)),
        ..Default::default()
    }
}

pub async fn submit(
    c: &mut FeedServiceClient<Authed>,
    header: pb::SubmissionHeader,
    csv: &[u8],
) -> Result<pb::SubmitFeedResponse, tonic::Status> {
    c.submit_feed(submission_stream(header, csv.to_vec())).await.map(|r| r.into_inner())
}

pub const VALID: &[u8] = include_bytes!("../fixtures/valid-feed.csv");
pub const INVALID: &[u8] = include_bytes!("../fixtures/invalid-feed.csv");

/// A valid UPN made from a number.
pub fn upn(n: u64) -> String {
    let rest = format!("{:012}", n);
    let c = check_letter(rest.as_bytes()) as char;
    format!("{c}{rest}")
}

/// A valid feed of `n` pupils; `salt` changes the data (not the UPNs).
pub fn valid_csv(n: usize, salt: u64) -> Vec<u8> {
    let mut s = riskid::ingest::contract_header();
    for i in 0..n {
        let absent = (i as u64 + salt) % 20;
        let spells = absent.min(3);
        s.push_str(&format!(
            "\n{},{},M,WBRI,N,N,N,,,,140,{absent},0,{spells},0,,N,,,,,,,,,N",
            upn(800_000_000 + i as u64),
            1 + i % 6
        ));
    }
    s.into_bytes()
}

/// A small generated borough, every feed submitted through the API by its school.
pub struct Borough {
    pub world: riskid::synth::World,
    pub latest: Term,
}

pub async fn submit_world(app: &TestApp, schools: usize) -> Borough {
    let cfg = riskid::synth::WorldConfig {
        schools,
        years: 1,
        seed: 5,
        primary_year_size: 12,
        secondary_year_size: 24,
        ..Default::default()
    };
    let world = riskid::synth::generate(&cfg).unwrap();
    for f in &world.feeds {
        let mut c = app.feed(&app.key(Role::School, &[f.urn.get()])).await;
        let h = header(f.urn.get(), f.term);
        submit(&mut c, h, &riskid::synth::feed_csv(&f.rows)).await.unwrap();
    }
    let latest = *world.terms.last().unwrap();
    Borough { world, latest }
}

pub fn st(urn: Urn, t: Term) -> pb::SchoolTerm {
    riskid::api::school_term_pb(urn, t)
}

/// A google.protobuf.Struct as JSON text, for assertions on what it holds.
pub fn struct_json(s: &prost_types::Struct) -> String {
    fn value(v: &prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match &v.kind {
            Some(Kind::BoolValue(b)) => (*b).into(),
            Some(Kind::NumberValue(n)) => (*n).into(),
            Some(Kind::StringValue(s)) => s.clone().into(),
            Some(Kind::ListValue(l)) => l.values.iter().map(value).collect(),
            Some(Kind::StructValue(s)) => object(s),
            Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
        }
    }
    fn object(s: &prost_types::Struct) -> serde_json::Value {
        s.fields.iter().map(|(k, v)| (k.clone(), value(v))).collect::<serde_json::Map<_, _>>().into()
    }
    object(s).to_string()
}

/// (field, reason) of each BadRequest violation of a status.
pub fn bad_request_fields(s: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| (v.field, v.reason)).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status ("" when it has none).
pub fn error_reason(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info().map(|e| e.reason).unwrap_or_default()
}
