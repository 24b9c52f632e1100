//! tonic server wiring: services, health, reflection, the access layer, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::api::pb::audit_service_server::AuditServiceServer;
use crate::api::pb::cohort_service_server::CohortServiceServer;
use crate::api::pb::feed_service_server::FeedServiceServer;
use crate::api::pb::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::api::pb::model_service_server::ModelServiceServer;
use crate::api::pb::outcome_service_server::OutcomeServiceServer;
use crate::api::pb::risk_service_server::RiskServiceServer;
use crate::api::{AuditApi, CohortApi, FeedApi, GatewayLayer, InferenceApi, ModelApi, OutcomeApi, RiskApi, pb};
use crate::app::{App, Limits};
use crate::storage::Store;

/// Everything the server needs, from flags or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on for gRPC.
    #[arg(long, env = "RISKID_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Data directory: holds the SQLite database (created on first start).
    #[arg(long, env = "RISKID_DATA_DIR", default_value = "./riskid-data")]
    pub data_dir: PathBuf,
    /// Largest feed accepted, in bytes; larger submissions are refused (RESOURCE_EXHAUSTED)
    /// as soon as they pass it.
    #[arg(long, env = "RISKID_MAX_FEED_BYTES", default_value_t = 16 << 20)]
    pub max_feed_bytes: usize,
    /// Most pupil rows in one feed (the largest English school has about 3,500 pupils);
    /// longer feeds are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "RISKID_MAX_FEED_ROWS", default_value_t = 10_000)]
    pub max_feed_rows: usize,
    /// Feeds received, validated and stored at once; more are refused with
    /// RESOURCE_EXHAUSTED and RetryInfo. An upload holds a slot only once its data flows.
    #[arg(long, env = "RISKID_MAX_CONCURRENT_INGESTS", default_value_t = 4)]
    pub max_concurrent_ingests: usize,
    /// Uploads one key may have open at once, so one key cannot hold every slot.
    #[arg(long, env = "RISKID_MAX_INGESTS_PER_KEY", default_value_t = 2)]
    pub max_ingests_per_key: usize,
    /// An upload that sends nothing for this long is ended (DEADLINE_EXCEEDED) and its slot
    /// freed, e.g. "15s".
    #[arg(long, env = "RISKID_INGEST_IDLE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ingest_idle_timeout: std::time::Duration,
    /// The longest a whole upload may take before it is ended (DEADLINE_EXCEEDED), e.g. "5m".
    #[arg(long, env = "RISKID_MAX_UPLOAD_TIME", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_upload_time: std::time::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP; bind it to a private
    /// address). Off unless given.
    #[arg(long, env = "RISKID_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the web app (pages for link workers, school data managers and analysts) at
    /// ADDR, with the same TLS settings as gRPC. Off unless given.
    #[arg(long, env = "RISKID_WEB_LISTEN")]
    pub web_listen: Option<SocketAddr>,
    /// Mark the web app's cookies `Secure` (and send HSTS) although this server speaks plain
    /// HTTP: for a TLS-terminating proxy in front of it.
    #[arg(long, env = "RISKID_WEB_SECURE_COOKIES")]
    pub web_secure_cookies: bool,
    /// The secret key that authenticates the audit chain (64 hex characters). When not given,
    /// `audit.key` in the data directory is used, created on first start: for production,
    /// move it elsewhere (a secrets store) and pass its path here.
    #[arg(long, env = "RISKID_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<PathBuf>,
    /// PEM certificate chain for TLS. With --tls-key, the server speaks only TLS; without
    /// both, plaintext (for local use: put production behind TLS).
    #[arg(long, env = "RISKID_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "RISKID_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Settings {
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            data_dir,
            max_feed_bytes: 16 << 20,
            max_feed_rows: 10_000,
            max_concurrent_ingests: 4,
            max_ingests_per_key: 2,
            ingest_idle_timeout: std::time::Duration::from_secs(15),
            max_upload_time: std::time::Duration::from_secs(300),
            audit_key_file: None,
            metrics_listen: None,
            web_listen: None,
            web_secure_cookies: false,
            tls_cert: None,
            tls_key: None,
        }
    }

    /// The TLS identity, read from the configured files, if TLS is on.
    pub fn tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()));
        Ok(Some(ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?))))
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_feed_bytes: self.max_feed_bytes,
            max_feed_rows: self.max_feed_rows,
            max_concurrent_ingests: self.max_concurrent_ingests,
            max_ingests_per_key: self.max_ingests_per_key,
            ingest_idle_timeout: self.ingest_idle_timeout,
            max_upload_time: self.max_upload_time,
        }
    }
}

/// Opens the store and builds the application from settings.
pub fn build_app(settings: &Settings) -> anyhow::Result<Arc<App>> {
    let store = Store::open_with_key(&settings.data_dir, settings.audit_key_file.as_deref())?;
    Ok(Arc::new(App::new(Arc::new(store), settings.limits())?))
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FeedServiceServer<FeedApi>>().await;
    health.set_serving::<RiskServiceServer<RiskApi>>().await;
    health.set_serving::<ModelServiceServer<ModelApi>>().await;
    health.set_serving::<CohortServiceServer<CohortApi>>().await;
    health.set_serving::<AuditServiceServer<AuditApi>>().await;
    health.set_serving::<OutcomeServiceServer<OutcomeApi>>().await;
    // Both reflection versions: older grpcurl and Python's grpcio-reflection speak v1alpha only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Per-service message limits: feed chunks of up to 1 MiB; ScoreRecords up to 4 MiB (what
    // default clients send); every other request is small. Repeated fields are also counted
    // on the wire before decoding (api::codec).
    const FEED_MSG: usize = (1 << 20) + 4096;
    const SCORE_MSG: usize = 4 << 20;
    const SMALL_MSG: usize = 64 << 10;
    // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to small replies.
    // gzip and zstd are accepted on requests and used on replies for clients that offer them.
    macro_rules! compressed {
        ($svc:expr) => {
            $svc.accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd)
        };
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .layer(GatewayLayer::new(app.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(compressed!(FeedServiceServer::new(FeedApi::new(app.clone())).max_decoding_message_size(FEED_MSG)))
        .add_service(compressed!(
            RiskServiceServer::new(RiskApi::new(app.clone())).max_decoding_message_size(SCORE_MSG)
        ))
        .add_service(compressed!(
            ModelServiceServer::new(ModelApi::new(app.clone())).max_decoding_message_size(SMALL_MSG)
        ))
        .add_service(compressed!(
            CohortServiceServer::new(CohortApi::new(app.clone())).max_decoding_message_size(SMALL_MSG)
        ))
        .add_service(compressed!(
            AuditServiceServer::new(AuditApi::new(app.clone())).max_decoding_message_size(SMALL_MSG)
        ))
        .add_service(compressed!(
            OutcomeServiceServer::new(OutcomeApi::new(app.clone())).max_decoding_message_size(SMALL_MSG)
        ))
        .add_service(compressed!(
            GrpcInferenceServiceServer::new(InferenceApi::new(app.clone())).max_decoding_message_size(SCORE_MSG)
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Completes on SIGINT (ctrl-c) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; draining");
}

/// Runs the server from settings until a shutdown signal.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let tls = settings.tls()?;
    let app = build_app(&settings)?;
    let listener = TcpListener::bind(settings.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %settings.data_dir.display(),
        tls = tls.is_some(),
        "riskid serving"
    );
    if let Some(addr) = settings.metrics_listen {
        let metrics = TcpListener::bind(addr).await?;
        tracing::info!(addr = %metrics.local_addr()?, "metrics at /metrics");
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(metrics, app, std::future::pending()).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    if let Some(addr) = settings.web_listen {
        spawn_web(addr, app.clone(), &settings).await?;
    }
    serve(listener, app, tls, shutdown_signal()).await
}

/// Starts the web app on `addr` (TLS as for gRPC); returns the address it listens on.
pub async fn spawn_web(addr: SocketAddr, app: Arc<App>, settings: &Settings) -> anyhow::Result<SocketAddr> {
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(c), Some(k)) => Some(crate::web::tls_config(c, k)?),
        _ => None,
    };
    let config =
        crate::web::WebConfig { secure_cookies: tls.is_some() || settings.web_secure_cookies, ..Default::default() };
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, "web app at {scheme}://{bound}/");
    let web = crate::web::Web::new(app, config);
    tokio::spawn(async move {
        if let Err(e) = crate::web::serve(listener, web, tls, std::future::pending()).await {
            tracing::error!(error = %e, "the web listener stopped");
        }
    });
    Ok(bound)
}
