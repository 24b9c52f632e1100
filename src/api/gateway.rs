//! One place for access: every RPC passes through here. It assigns a request id, resolves
//! the bearer key to a principal, and checks the role against the method's policy.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::app::App;
use crate::auth::{Role, UseCase};

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No key (health, reflection, the inference protocol's metadata).
    Public,
    /// A key whose role may do this use case (the one role table, in `auth::UseCase`).
    Key(UseCase),
    /// Not a method this server serves: refused to everyone.
    Unknown,
}

/// The use case behind a method (by its gRPC path).
pub fn gate(path: &str) -> Gate {
    use UseCase::*;
    Gate::Key(match path {
        p if p.starts_with("/grpc.health.v1.Health/") => return Gate::Public,
        p if p.starts_with("/grpc.reflection.") => return Gate::Public,
        // Open Inference Protocol: liveness, readiness and metadata are public, like health.
        "/inference.GRPCInferenceService/ServerLive"
        | "/inference.GRPCInferenceService/ServerReady"
        | "/inference.GRPCInferenceService/ModelReady"
        | "/inference.GRPCInferenceService/ServerMetadata"
        | "/inference.GRPCInferenceService/ModelMetadata" => return Gate::Public,
        "/inference.GRPCInferenceService/ModelInfer" => ScoreRecords,
        // A report is returned only to the key that submitted the feed (checked by the use case).
        "/riskid.v1.FeedService/SubmitFeed" | "/riskid.v1.FeedService/GetFeedReport" => SubmitFeed,
        "/riskid.v1.FeedService/GetSubmission" | "/riskid.v1.FeedService/ListSubmissions" => ReadSubmissions,
        // Pupils' rows: as for their scores (checked by the use case per school).
        "/riskid.v1.FeedService/ListSubmissionRows" => ReadSubmissionRows,
        "/riskid.v1.RiskService/ScoreRecords" => ScoreRecords,
        "/riskid.v1.RiskService/GetPupilRisk" | "/riskid.v1.RiskService/ListSchoolRisks" => ReadRisks,
        "/riskid.v1.ModelService/TrainModel"
        | "/riskid.v1.ModelService/EvaluateModel"
        | "/riskid.v1.ModelService/ListModels"
        | "/riskid.v1.ModelService/GetModel"
        | "/riskid.v1.ModelService/ActivateModel"
        | "/riskid.v1.ModelService/RescoreSchoolTerm"
        | "/riskid.v1.ModelService/GetLivePerformance" => ManageModels,
        "/riskid.v1.CohortService/ProposeCohort" => ProposeCohort,
        "/riskid.v1.CohortService/GetCohort" | "/riskid.v1.CohortService/ListCohorts" => ReadCohorts,
        "/riskid.v1.CohortService/RecordDecision"
        | "/riskid.v1.CohortService/UndoDecision"
        | "/riskid.v1.CohortService/FinaliseCohort" => ReviewCohort,
        // Published figures only; a school and its link workers read their own (the use case).
        "/riskid.v1.OutcomeService/GetProgrammeOutcomes" => ReadOutcomes,
        "/riskid.v1.AuditService/ListAuditEvents"
        | "/riskid.v1.AuditService/VerifyAuditChain"
        | "/riskid.v1.AuditService/GetAuditCheckpoint"
        | "/riskid.v1.AuditService/GetOverrideReport" => ReadAudit,
        _ => return Gate::Unknown,
    })
}

/// Which roles may call a method. `None`: no key needed. A method missing from the table is
/// refused to everyone (no roles).
pub fn policy(path: &str) -> Option<&'static [Role]> {
    match gate(path) {
        Gate::Public => None,
        Gate::Key(uc) => Some(uc.roles()),
        Gate::Unknown => Some(&[]),
    }
}

/// Whether a caller's value contains something that reads as a UPN: it would reach the logs.
fn holds_upn(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 13
        && (0..=b.len() - 13)
            .any(|i| std::str::from_utf8(&b[i..i + 13]).is_ok_and(|w| crate::domain::Upn::parse(w).is_ok()))
}

#[derive(Clone)]
pub struct GatewayLayer {
    app: Arc<App>,
}

impl GatewayLayer {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = Gateway<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Gateway { inner, app: self.app.clone() }
    }
}

#[derive(Clone)]
pub struct Gateway<S> {
    inner: S,
    app: Arc<App>,
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

impl<S, B> Service<Request<B>> for Gateway<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let app = self.app.clone();
        // A caller's own request id is kept (so it can match our logs to its own) when it is
        // a plain token; anything else is replaced by a fresh one.
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| super::limits::is_token(v, super::limits::MAX_REQUEST_ID) && !holds_upn(v))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        // The path is caller text: only a method this server serves is logged or labelled.
        let method = crate::metrics::method_label(req.uri().path()).to_owned();
        let started = std::time::Instant::now();
        let span = tracing::info_span!("rpc", request_id = %request_id, method = %method);
        // Made before the future, so a call dropped before it has a reply is still counted:
        // past its own deadline (which tonic enforces outside this layer) as DEADLINE_EXCEEDED,
        // otherwise (the client went away) as CANCELLED.
        let deadline = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
            .and_then(|d| started.checked_add(d));
        let mut recorder = Recorder { app: app.clone(), method, started, code: None, deadline };
        async move {
            let path = req.uri().path().to_owned();
            let result = match policy(&path) {
                None => Ok(()),
                Some(allowed) => match bearer(req.headers()) {
                    None => Err(super::status::with_reason(
                        tonic::Code::Unauthenticated,
                        "API_KEY_MISSING",
                        "an API key is required: send `authorization: Bearer <key>`",
                    )),
                    Some(key) => match app.authenticate(key).await {
                        Ok(p) if allowed.contains(&p.role) => {
                            tracing::debug!(key_id = p.key_id, role = %p.role, "authenticated");
                            req.extensions_mut().insert(p);
                            Ok(())
                        }
                        Ok(p) => Err(super::status::with_reason(
                            tonic::Code::PermissionDenied,
                            "ROLE_NOT_ALLOWED",
                            format!("the {} role may not call {}", p.role, recorder.method),
                        )),
                        Err(e) => Err(super::status::to_status(e)),
                    },
                },
            };
            let mut resp = match result {
                Ok(()) => inner.call(req).await?,
                Err(status) => {
                    tracing::info!(code = ?status.code(), "refused at the gateway");
                    status.into_http()
                }
            };
            add_missing_details(resp.headers_mut());
            recorder.code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from);
            // An error reply at the deadline is the deadline's doing: the client has given up
            // (and cut the upload short, which is what the handler saw).
            if recorder.code.is_some_and(|c| c != tonic::Code::Ok) && recorder.at_deadline() {
                recorder.code = Some(tonic::Code::DeadlineExceeded);
            }
            let mut resp =
                resp.map(|body| tonic::body::Body::new(MeteredBody { inner: body, recorder: Some(recorder) }));
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            Ok(resp)
        }
        .instrument(span)
        .boxed_send()
    }
}

/// Counts an RPC when its reply ends: the code from the headers (an error before any reply)
/// or from the trailers; a reply dropped before its end (the caller went away) is CANCELLED.
struct Recorder {
    app: Arc<App>,
    method: String,
    started: std::time::Instant,
    code: Option<tonic::Code>,
    deadline: Option<std::time::Instant>,
}

/// A `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(v: &str) -> Option<std::time::Duration> {
    let (n, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    let n: u64 = n.parse().ok()?;
    use std::time::Duration as D;
    Some(match unit {
        "H" => D::from_secs(n.checked_mul(3600)?),
        "M" => D::from_secs(n.checked_mul(60)?),
        "S" => D::from_secs(n),
        "m" => D::from_millis(n),
        "u" => D::from_micros(n),
        "n" => D::from_nanos(n),
        _ => return None,
    })
}

impl Recorder {
    /// The client enforces the same deadline by its own clock, a little before ours (the
    /// request took time to arrive): just short of it is that deadline too.
    fn at_deadline(&self) -> bool {
        let slack = std::time::Duration::from_millis(100);
        self.deadline.is_some_and(|d| std::time::Instant::now() + slack >= d)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let dropped = if self.at_deadline() { tonic::Code::DeadlineExceeded } else { tonic::Code::Cancelled };
        let code = self.code.unwrap_or(dropped);
        self.app.metrics().rpc(&self.method, code, self.started.elapsed());
    }
}

struct MeteredBody {
    inner: tonic::body::Body,
    recorder: Option<Recorder>,
}

impl http_body::Body for MeteredBody {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(t), Some(r)) = (frame.trailers_ref(), this.recorder.as_mut()) {
                    r.code = t
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(tonic::Code::from);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(r) = this.recorder.as_mut() {
                    r.code = r.code.or(Some(tonic::Code::Internal));
                }
            }
            Poll::Ready(None) => drop(this.recorder.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A status that tonic made itself (an oversized or undecodable message, an unknown method
/// or compression) has no details: give it an ErrorInfo, so every error has a reason.
fn add_missing_details(headers: &mut http::HeaderMap) {
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if code == 0 || headers.contains_key("grpc-status-details-bin") {
        return;
    }
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).map(percent_decode).unwrap_or_default();
    let status = tonic::Status::with_details(
        tonic::Code::from(code),
        message.clone(),
        super::status::fallback_details(tonic::Code::from(code), &message).into(),
    );
    if let Some(v) = status.into_http::<tonic::body::Body>().headers().get("grpc-status-details-bin") {
        headers.insert("grpc-status-details-bin", v.clone());
    }
}

/// `grpc-message` is percent-encoded on the wire (the gRPC spec).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

trait BoxedSend: std::future::Future + Send + Sized + 'static {
    fn boxed_send<'a>(self) -> BoxFuture<'a, Self::Output> {
        Box::pin(self)
    }
}
impl<F: std::future::Future + Send + 'static> BoxedSend for F {}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_rpc_has_roles_and_unknown_methods_have_none() {
        let fds = prost_types::FileDescriptorSet::decode(super::super::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut n = 0;
        for file in fds.file.iter().filter(|f| f.package() == "riskid.v1") {
            for svc in &file.service {
                for m in &svc.method {
                    let path = format!("/riskid.v1.{}/{}", svc.name(), m.name());
                    let roles = policy(&path).expect("riskid methods need a key");
                    assert!(!roles.is_empty(), "{path} has no roles: add it to the policy table");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 26);
        // Every use case in the shared role table is reached by some method (the web pages
        // use the same table).
        let mut reached = std::collections::HashSet::new();
        for file in &fds.file {
            for svc in &file.service {
                for m in &svc.method {
                    if let Gate::Key(uc) = gate(&format!("/{}.{}/{}", file.package(), svc.name(), m.name())) {
                        reached.insert(uc);
                    }
                }
            }
        }
        for uc in crate::auth::UseCase::ALL {
            assert!(reached.contains(&uc), "{uc:?} has no gRPC method");
        }
        assert_eq!(policy("/riskid.v1.FeedService/DropTables"), Some(&[][..]));
        assert_eq!(policy("/grpc.health.v1.Health/Check"), None);
    }
}
