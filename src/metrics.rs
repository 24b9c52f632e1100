//! Operational metrics in the Prometheus text format, served at `/metrics` on a listener of
//! its own (`--metrics-listen`).
//!
//! No label ever holds a pupil value or a school id: methods come from the fixed table of
//! RPCs (anything else is `other`), codes from gRPC's fixed list, outcomes and kinds from
//! fixed words, and the model id (which is not about a pupil) only on the one "model in use"
//! gauge.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    rpc_total: IntCounterVec,
    rpc_seconds: HistogramVec,
    pub ingest_rows: IntCounter,
    pub feeds: IntCounterVec,
    pub scoring_seconds: HistogramVec,
    pub training_seconds: Histogram,
    pub model_active: IntGaugeVec,
    pub ingests_in_flight: IntGauge,
    pub ingest_slots: IntGauge,
    pub scoring_in_flight: IntGauge,
    pub scoring_slots: IntGauge,
    pub score_queue: IntGauge,
}

const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("riskid".into()), None).expect("a valid prefix");
        let rpc_total = IntCounterVec::new(
            Opts::new("rpc_requests_total", "RPCs finished, by method and gRPC status code"),
            &["method", "code"],
        )
        .expect("valid metric");
        let rpc_seconds = HistogramVec::new(
            HistogramOpts::new("rpc_duration_seconds", "Time from request to the end of the reply, by method")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .expect("valid metric");
        let ingest_rows = IntCounter::new("ingest_rows_total", "Pupil rows in accepted feeds").expect("valid metric");
        let feeds = IntCounterVec::new(Opts::new("feeds_total", "Feeds submitted, by outcome"), &["outcome"])
            .expect("valid metric");
        let scoring_seconds = HistogramVec::new(
            HistogramOpts::new("scoring_duration_seconds", "Time to score, by kind (feed, stateless, rescore)")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind"],
        )
        .expect("valid metric");
        let training_seconds = Histogram::with_opts(
            HistogramOpts::new("training_duration_seconds", "Time to train and evaluate a model")
                .buckets(vec![1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
        )
        .expect("valid metric");
        let model_active =
            IntGaugeVec::new(Opts::new("model_active", "1 for the model in use"), &["model_id"]).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let m = Self {
            ingests_in_flight: gauge("ingests_in_flight", "Feed uploads holding an ingest slot"),
            ingest_slots: gauge("ingest_slots", "Ingest slots in all (--max-concurrent-ingests)"),
            scoring_in_flight: gauge("scoring_in_flight", "Stateless scoring batches running"),
            scoring_slots: gauge("scoring_slots", "Stateless scoring slots in all"),
            score_queue: gauge("score_queue", "School terms queued for rescoring after an activation"),
            registry,
            rpc_total,
            rpc_seconds,
            ingest_rows,
            feeds,
            scoring_seconds,
            training_seconds,
            model_active,
        };
        let r = &m.registry;
        r.register(Box::new(m.rpc_total.clone())).expect("registered once");
        r.register(Box::new(m.rpc_seconds.clone())).expect("registered once");
        r.register(Box::new(m.ingest_rows.clone())).expect("registered once");
        r.register(Box::new(m.feeds.clone())).expect("registered once");
        r.register(Box::new(m.scoring_seconds.clone())).expect("registered once");
        r.register(Box::new(m.training_seconds.clone())).expect("registered once");
        r.register(Box::new(m.model_active.clone())).expect("registered once");
        for g in [&m.ingests_in_flight, &m.ingest_slots, &m.scoring_in_flight, &m.scoring_slots, &m.score_queue] {
            r.register(Box::new(g.clone())).expect("registered once");
        }
        m
    }

    /// Records one finished RPC. `method` must come from the fixed table (see [`method_label`]).
    pub fn rpc(&self, method: &str, code: tonic::Code, took: Duration) {
        self.rpc_total.with_label_values(&[method, code_name(code)]).inc();
        self.rpc_seconds.with_label_values(&[method]).observe(took.as_secs_f64());
    }

    /// Shows `model_id` as the one model in use.
    pub fn set_model(&self, model_id: &str) {
        self.model_active.reset();
        self.model_active.with_label_values(&[model_id]).set(1);
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encodes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A method's label: its gRPC path if it is one this server serves, else `other` (paths are
/// caller text; an unbounded label set would be a memory leak and a log of probes).
pub fn method_label(path: &str) -> &str {
    const PUBLIC: &[&str] = &[
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    let known = match crate::api::policy(path) {
        // In the role table: a method this server serves.
        Some(roles) => !roles.is_empty(),
        // Keyless: only the exact methods, never whatever follows a public prefix.
        None => PUBLIC.contains(&path) || path.starts_with("/inference.GRPCInferenceService/"),
    };
    if known { path } else { "other" }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `/metrics` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: std::sync::Arc<crate::app::App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let app = app.clone();
            async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], app.render_metrics().await) }
        }),
    );
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_paths_never_become_labels() {
        assert_eq!(method_label("/riskid.v1.RiskService/GetPupilRisk"), "/riskid.v1.RiskService/GetPupilRisk");
        assert_eq!(
            method_label("/inference.GRPCInferenceService/ModelInfer"),
            "/inference.GRPCInferenceService/ModelInfer"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "/grpc.health.v1.Health/Check");
        assert_eq!(method_label("/riskid.v1.RiskService/B801200005001"), "other");
        assert_eq!(method_label("/anything/else"), "other");
    }

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new();
        m.rpc("/riskid.v1.RiskService/GetPupilRisk", tonic::Code::NotFound, Duration::from_millis(3));
        m.set_model("m-1");
        let text = m.render();
        assert!(text.contains(
            "riskid_rpc_requests_total{code=\"NOT_FOUND\",method=\"/riskid.v1.RiskService/GetPupilRisk\"} 1"
        ));
        assert!(text.contains("riskid_model_active{model_id=\"m-1\"} 1"));
        assert!(text.contains("# TYPE riskid_rpc_duration_seconds histogram"));
    }
}
