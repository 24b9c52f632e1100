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
    use crate::cli::exit::{Exit, fail};
    let server = args.server.trim();
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(fail(
            Exit::Usage,
            format!("the server address {server:?} needs a scheme: use http://{server} (or https://{server} with TLS)"),
        ));
    }
    let mut endpoint = Channel::from_shared(server.to_owned())
        .map_err(|e| fail(Exit::Usage, format!("the server address {server:?} is not a URL: {e}")))?;
    if let Some(ca) = &args.tls_ca {
        let pem = std::fs::read(ca).map_err(|e| fail(Exit::Usage, format!("cannot read {}: {e}", ca.display())))?;
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
        endpoint = endpoint.tls_config(tls).map_err(|e| fail(Exit::Usage, format!("TLS settings: {e}")))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        use std::error::Error;
        let cause = e.source().map(|c| format!(": {c}")).unwrap_or_default();
        fail(Exit::Unavailable, format!("cannot reach the riskid server at {server}: {e}{cause}"))
    })?;
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

/// Text from the server made safe for a terminal: control characters (escape sequences,
/// carriage returns, backspaces) and bidirectional overrides are shown escaped, never
/// written raw, so a hostile header name or note cannot rewrite the screen.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return s.into();
    }
    s.chars()
        .flat_map(|c| {
            let v: Vec<char> = if bad(c) { c.escape_unicode().collect() } else { vec![c] };
            v
        })
        .collect::<String>()
        .into()
}

/// `println!` for anything that may hold text from the server: see [`safe`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        println!("{}", $crate::client::safe(&format!($($arg)*)))
    };
}

/// CSV chunk size: well under the server's 1 MiB message limit.
const CHUNK: usize = 256 << 10;

/// Streams a CSV body as a header then 256 KiB chunks.
pub fn submission_stream(
    header: pb::SubmissionHeader,
    csv: Vec<u8>,
) -> impl tokio_stream::Stream<Item = pb::SubmitFeedRequest> {
    use pb::submit_feed_request::Part;
    let mut parts = vec![pb::SubmitFeedRequest { part: Some(Part::Header(header)) }];
    parts.extend(csv.chunks(CHUNK).map(|c| pb::SubmitFeedRequest { part: Some(Part::CsvChunk(c.to_vec())) }));
    tokio_stream::iter(parts)
}

/// Streams a Common Transfer File and its supplement (header format FEED_FORMAT_CTF).
pub fn ctf_stream(
    header: pb::SubmissionHeader,
    xml: Vec<u8>,
    supplement: Vec<u8>,
) -> impl tokio_stream::Stream<Item = pb::SubmitFeedRequest> {
    use pb::submit_feed_request::Part;
    let mut parts = vec![pb::SubmitFeedRequest { part: Some(Part::Header(header)) }];
    parts.extend(xml.chunks(CHUNK).map(|c| pb::SubmitFeedRequest { part: Some(Part::CtfChunk(c.to_vec())) }));
    parts.extend(
        supplement.chunks(CHUNK).map(|c| pb::SubmitFeedRequest { part: Some(Part::SupplementChunk(c.to_vec())) }),
    );
    tokio_stream::iter(parts)
}

/// Whether a file is XML (a Common Transfer File) rather than CSV, by its first characters.
pub fn looks_like_xml(bytes: &[u8]) -> bool {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    b.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'<')
}

/// Where a violation is, as a person reads it: `12` (a feed's line), `CTF line 40`,
/// `supplement line 3`.
fn place_words(field: &str, line: u64) -> String {
    if field.starts_with("ctf.") {
        format!("CTF line {line}")
    } else if field.starts_with("supplement.") {
        format!("supplement line {line}")
    } else {
        line.to_string()
    }
}

/// A rejection's violations from the status's BadRequest: the field, then (line, column,
/// code, message).
fn rejection(status: &Status) -> Vec<(String, (u64, String, String, String))> {
    let Some(bad) = status.get_details_bad_request() else {
        return vec![];
    };
    bad.field_violations
        .iter()
        .map(|v| {
            let (line, col) = parse_field(&v.field).unwrap_or((0, v.field.clone()));
            (v.field.clone(), (line, col, v.reason.to_ascii_lowercase(), v.description.clone()))
        })
        .collect()
}

/// A rejection as (line, column, code, message) rows, read from the status's BadRequest.
pub fn rejection_rows(status: &Status) -> Vec<(u64, String, String, String)> {
    rejection(status).into_iter().map(|(_, r)| r).collect()
}

/// As [`rejection_rows`], with the place in words: `12`, `CTF line 40`, `supplement line 3`.
pub fn rejection_places(status: &Status) -> Vec<(String, String, String, String)> {
    rejection(status)
        .into_iter()
        .map(|(field, (line, col, code, msg))| (place_words(&field, line), col, code, msg))
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
    crate::out!("{what}");
    if let Some(st) = st {
        let term = pb::TermName::try_from(st.term).map(|t| t.as_str_name().to_ascii_lowercase()).unwrap_or_default();
        crate::out!("  school {}  {} {}", st.school_urn, st.academic_year, term);
    }
    if !s.submission_id.is_empty() {
        crate::out!("  submission {}", s.submission_id);
    }
    if !s.supersedes_submission_id.is_empty() {
        crate::out!("  supersedes submission {}", s.supersedes_submission_id);
    }
    crate::out!("  {} pupil rows, {} warning(s)", s.row_count, s.warning_count);
    for w in &s.warnings {
        crate::out!("  warning  line {:>5}  {:<22} {}", w.line, w.column, w.message);
    }
}

/// The rejection's ErrorInfo metadata value for `key`.
fn info(status: &Status, key: &str) -> Option<String> {
    status.get_details_error_info().and_then(|i| i.metadata.get(key).cloned())
}

/// Prints a rejection: every listed error (fetching the full report when the status lists
/// only the first ones) and the total.
pub async fn print_rejection(c: &mut FeedServiceClient<Authed>, status: &Status) {
    crate::out!("REJECTED: {}", status.message());
    let total: Option<u64> = info(status, "error_count").and_then(|n| n.parse().ok());
    let mut rows = rejection_places(status);
    // A CTF's report is always fetched: it names each finding's XML element.
    let ctf = rows.iter().any(|(p, ..)| p.starts_with("CTF") || p.starts_with("supplement"));
    if let (Some(id), Some(total)) = (info(status, "report_id"), total)
        && (total as usize > rows.len() || ctf)
    {
        match c.get_feed_report(pb::GetFeedReportRequest { report_id: id }).await {
            Ok(r) => {
                rows = r
                    .into_inner()
                    .errors
                    .into_iter()
                    .map(|v| {
                        let place = place_words(&v.field, v.line);
                        let msg =
                            if v.element.is_empty() { v.message } else { format!("{} [{}]", v.message, v.element) };
                        (place, v.column, v.code, msg)
                    })
                    .collect();
            }
            Err(e) => eprintln!(
                "  (could not fetch the full report: {}; showing the first {})",
                safe(e.message()),
                rows.len()
            ),
        }
    }
    if !rows.is_empty() {
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
        crate::out!("  {:>w$}  {:<22} {:<16} message", "line", "column", "code");
        for (place, col, code, msg) in &rows {
            crate::out!("  {place:>w$}  {col:<22} {code:<16} {msg}");
        }
    }
    if let Some(total) = total {
        let more =
            if total as usize > rows.len() { format!(" (the first {} shown)", rows.len()) } else { String::new() };
        crate::out!("  {total} error(s) in all{more}; nothing was stored");
    }
}

/// Calls a method with pre-encoded request messages and returns the raw reply: for load and
/// hostile-input tools that must send what no typed client would build (millions of empty
/// records without holding them decoded). Any unary or client-streaming method works.
pub async fn raw_call(
    channel: Channel,
    key: &str,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(tokio_stream::iter(messages));
    req.metadata_mut().insert("authorization", Bearer::new(key).0);
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.client_streaming(req, path, raw::RawCodec).await.map(|r| r.into_inner())
}

/// A codec that passes message bytes through unchanged.
mod raw {
    use prost::bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct RawCodec;
    pub struct Raw;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe;

    #[test]
    fn terminal_escapes_from_the_server_are_shown_not_obeyed() {
        assert_eq!(safe("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(safe("m\u{1b}[2J"), "m\\u{1b}[2J");
        assert_eq!(safe("a\rb\u{8}"), "a\\u{d}b\\u{8}");
        assert_eq!(safe("x\u{202e}y"), "x\\u{202e}y", "bidirectional overrides too");
    }
}
