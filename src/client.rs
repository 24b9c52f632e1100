//! Client commands: talk to a running server through the generated client.

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_types::StatusExt;

use crate::api::pb::feed_service_client::FeedServiceClient;
use crate::api::{parse_field, pb};

/// How to reach the server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long, env = "RISKID_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// API key (prefer the RISKID_KEY environment variable: flags show up in process lists).
    #[arg(long, env = "RISKID_KEY", hide_env_values = true)]
    pub key: String,
    /// PEM CA certificate to trust for an https:// server (e.g. a self-signed one).
    #[arg(long, env = "RISKID_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// A key with characters a header cannot carry is sent empty, so the server refuses it.
    pub fn new(key: &str) -> Self {
        Self(format!("Bearer {key}").parse().unwrap_or_else(|_| MetadataValue::from_static("")))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

pub async fn connect(args: &ClientArgs) -> anyhow::Result<(Channel, Bearer)> {
    let mut endpoint = Channel::from_shared(args.server.clone())?;
    if let Some(ca) = &args.tls_ca {
        let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?;
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the riskid server at {}: {e}", args.server))?;
    let bearer = Bearer(
        format!("Bearer {}", args.key)
            .parse()
            .map_err(|_| anyhow::anyhow!("the API key has characters a header cannot carry"))?,
    );
    Ok((channel, bearer))
}

pub async fn feed_client(args: &ClientArgs) -> anyhow::Result<FeedServiceClient<Authed>> {
    let (channel, bearer) = connect(args).await?;
    Ok(FeedServiceClient::with_interceptor(channel, bearer))
}

/// Streams a CSV body as a header then 1 MiB chunks.
pub fn submission_stream(
    header: pb::SubmissionHeader,
    csv: Vec<u8>,
) -> impl tokio_stream::Stream<Item = pb::SubmitFeedRequest> {
    use pb::submit_feed_request::Part;
    let mut parts = vec![pb::SubmitFeedRequest { part: Some(Part::Header(header)) }];
    parts.extend(csv.chunks(1 << 20).map(|c| pb::SubmitFeedRequest { part: Some(Part::CsvChunk(c.to_vec())) }));
    tokio_stream::iter(parts)
}

/// A rejection as (line, column, code, message) rows, read from the status's BadRequest.
pub fn rejection_rows(status: &Status) -> Vec<(u64, String, String, String)> {
    let Some(bad) = status.get_details_bad_request() else {
        return vec![];
    };
    bad.field_violations
        .iter()
        .map(|v| {
            let (line, col) = parse_field(&v.field).unwrap_or((0, v.field.clone()));
            (line, col, v.reason.to_ascii_lowercase(), v.description.clone())
        })
        .collect()
}

/// Prints a human-readable report of a submission outcome.
pub fn print_submission(outcome: pb::SubmitOutcome, s: &pb::Submission) {
    let st = s.school_term.as_ref();
    let what = match outcome {
        pb::SubmitOutcome::Accepted => "ACCEPTED",
        pb::SubmitOutcome::Unchanged => "UNCHANGED (identical to the current submission; nothing new stored)",
        pb::SubmitOutcome::Validated => "VALID (dry run; nothing stored)",
        pb::SubmitOutcome::Unspecified => "UNKNOWN",
    };
    println!("{what}");
    if let Some(st) = st {
        let term = pb::TermName::try_from(st.term).map(|t| t.as_str_name().to_ascii_lowercase()).unwrap_or_default();
        println!("  school {}  {} {}", st.school_urn, st.academic_year, term);
    }
    if !s.submission_id.is_empty() {
        println!("  submission {}", s.submission_id);
    }
    if !s.supersedes_submission_id.is_empty() {
        println!("  supersedes submission {}", s.supersedes_submission_id);
    }
    println!("  {} pupil rows, {} warning(s)", s.row_count, s.warning_count);
    for w in &s.warnings {
        println!("  warning  line {:>5}  {:<22} {}", w.line, w.column, w.message);
    }
}

pub fn print_rejection(status: &Status) {
    println!("REJECTED: {}", status.message());
    let rows = rejection_rows(status);
    if !rows.is_empty() {
        println!("  {:>6}  {:<22} {:<16} message", "line", "column", "code");
        for (line, col, code, msg) in rows {
            println!("  {line:>6}  {col:<22} {code:<16} {msg}");
        }
    }
}
