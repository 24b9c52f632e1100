//! FeedService: school data managers submit feeds and read back submissions.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::{record_cells, record_from_cells, submission_to_pb, term_from_pb, urn_from_pb, violation_to_pb};
use super::paging::{PageSize, Query, STANDARD};

/// Rows of a submission: a school's roll fits in a few pages.
const ROWS: PageSize = PageSize { default: 500, max: 2_000 };
use super::pb::{self, feed_service_server::FeedService, submit_feed_request::Part};
use super::principal;
use super::status::{bad_field, with_reason};
use crate::app::{App, AppError, FeedBody, RecordCells, SubmitResult};
use crate::storage::FeedSource;

pub struct FeedApi {
    app: Arc<App>,
}

impl FeedApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// A SubmitFeed stream that breaks the protocol (not the feed's content).
fn stream_error(message: impl Into<String>) -> Status {
    with_reason(Code::InvalidArgument, "INVALID_STREAM", message)
}

/// An upload in progress: its per-key slot, and the ingest permit once data flows.
struct Upload<'a> {
    app: &'a App,
    stream: &'a mut Streaming<pb::SubmitFeedRequest>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// When the whole upload must be done by (a slow trickle cannot hold a slot for ever).
    deadline: tokio::time::Instant,
}

impl Upload<'_> {
    /// The next message, or `None` at the end; an idle stream is ended with DEADLINE_EXCEEDED.
    async fn next(&mut self) -> Result<Option<Part>, Status> {
        let idle = self.app.limits().ingest_idle_timeout;
        let until = (tokio::time::Instant::now() + idle).min(self.deadline);
        let msg = match tokio::time::timeout_at(until, self.stream.next()).await {
            Ok(m) => m.transpose()?,
            Err(_) if until == self.deadline => {
                return Err(with_reason(
                    Code::DeadlineExceeded,
                    "UPLOAD_TIMED_OUT",
                    format!(
                        "the upload took longer than {} s and was ended; nothing was stored",
                        self.app.limits().max_upload_time.as_secs()
                    ),
                ));
            }
            Err(_) => {
                return Err(with_reason(
                    Code::DeadlineExceeded,
                    "UPLOAD_TIMED_OUT",
                    format!("the upload sent nothing for {} s and was ended; nothing was stored", idle.as_secs()),
                ));
            }
        };
        let Some(msg) = msg else { return Ok(None) };
        // The server-wide permit is taken when data first flows, not when the stream opens.
        if self.permit.is_none() {
            self.permit = Some(self.app.ingest_permit()?);
        }
        match msg.part {
            Some(Part::Header(_)) => Err(stream_error("the header may be sent only once, first")),
            // Empty parts carry nothing but would reset the idle timer: refuse them.
            None => Err(stream_error("empty message in the submission stream")),
            Some(Part::CsvChunk(c) | Part::CtfChunk(c) | Part::SupplementChunk(c)) if c.is_empty() => {
                Err(stream_error("empty chunk in the submission stream"))
            }
            Some(Part::Records(b)) if b.records.is_empty() => {
                Err(stream_error("empty record batch in the submission stream"))
            }
            Some(part) => Ok(Some(part)),
        }
    }
}

/// Reads the whole body of a submission stream, enforcing the size, row and time limits as
/// it goes; memory stays proportional to what has been accepted so far.
async fn read_body(up: &mut Upload<'_>, content_length: u64, format: pb::FeedFormat) -> Result<FeedBody, Status> {
    let limits = up.app.limits().clone();
    let max_bytes = limits.max_feed_bytes;
    let too_big = || {
        AppError::TooLarge {
            reason: "FEED_TOO_LARGE",
            message: format!(
                "the feed is larger than this server accepts ({max_bytes} bytes); split it or ask the operator to \
                 raise --max-feed-bytes; nothing was stored"
            ),
        }
        .into()
    };
    let ctf = format == pb::FeedFormat::Ctf;
    let mut csv = Vec::new();
    let mut supplement: Option<Vec<u8>> = None;
    let mut records: Vec<RecordCells> = Vec::new();
    let mut received = 0u64;
    // A transport error (cancelled or broken stream) ends the call here: nothing is stored.
    while let Some(part) = up.next().await? {
        received += match &part {
            Part::CsvChunk(chunk) | Part::CtfChunk(chunk) | Part::SupplementChunk(chunk) => chunk.len() as u64,
            Part::Records(batch) => prost::Message::encoded_len(batch) as u64,
            Part::Header(_) => 0,
        };
        if received > max_bytes as u64 {
            return Err(too_big());
        }
        if content_length > 0 && received > content_length {
            return Err(stream_error(format!(
                "the stream sent more than the {content_length} bytes announced in the header; nothing was stored"
            )));
        }
        match part {
            Part::CtfChunk(chunk) if ctf => csv.extend_from_slice(&chunk),
            Part::SupplementChunk(chunk) if ctf => supplement.get_or_insert_with(Vec::new).extend_from_slice(&chunk),
            Part::CtfChunk(_) | Part::SupplementChunk(_) => {
                return Err(stream_error("ctf_chunk and supplement_chunk need header format FEED_FORMAT_CTF"));
            }
            _ if ctf => {
                return Err(stream_error(
                    "with header format FEED_FORMAT_CTF, send the file in ctf_chunk and its supplement in \
                     supplement_chunk",
                ));
            }
            Part::CsvChunk(_) if format == pb::FeedFormat::Records => {
                return Err(stream_error("header format FEED_FORMAT_RECORDS: send record batches, not csv_chunk"));
            }
            Part::Records(_) if format == pb::FeedFormat::Csv => {
                return Err(stream_error("header format FEED_FORMAT_CSV: send csv_chunk, not record batches"));
            }
            Part::CsvChunk(chunk) if records.is_empty() => csv.extend_from_slice(&chunk),
            Part::Records(batch) if csv.is_empty() => {
                if records.len() + batch.records.len() > limits.max_feed_rows {
                    return Err(AppError::TooLarge {
                        reason: "FEED_TOO_MANY_ROWS",
                        message: format!(
                            "the feed has more than {} pupil records, the most this server accepts in one feed; \
                             nothing was stored (the operator sets this with --max-feed-rows)",
                            limits.max_feed_rows
                        ),
                    }
                    .into());
                }
                records.extend(batch.records.iter().map(record_cells));
            }
            _ => return Err(stream_error("send CSV chunks or record batches, not both")),
        }
    }
    if content_length > 0 && received != content_length {
        return Err(stream_error(format!(
            "the stream ended after {received} of the {content_length} bytes announced in the header; nothing was stored"
        )));
    }
    Ok(if ctf {
        FeedBody::Ctf { xml: csv, supplement }
    } else if records.is_empty() {
        FeedBody::Csv(csv)
    } else {
        FeedBody::Records(records)
    })
}

#[tonic::async_trait]
impl FeedService for FeedApi {
    async fn submit_feed(
        &self,
        request: Request<Streaming<pb::SubmitFeedRequest>>,
    ) -> Result<Response<pb::SubmitFeedResponse>, Status> {
        let caller = principal(&request)?;
        let mut stream = request.into_inner();
        let idle = self.app.limits().ingest_idle_timeout;
        let first = tokio::time::timeout(idle, stream.next()).await.map_err(|_| {
            with_reason(
                Code::DeadlineExceeded,
                "UPLOAD_TIMED_OUT",
                format!("no submission header within {} s", idle.as_secs()),
            )
        })?;
        let header = match first.transpose()?.and_then(|m| m.part) {
            Some(Part::Header(h)) => h,
            _ => {
                return Err(stream_error("the first message must be the submission header"));
            }
        };
        let pb::SubmissionHeader { school_term, request_id, dry_run, content_length, format } = header;
        let format = pb::FeedFormat::try_from(format)
            .map_err(|_| bad_field("header.format", "INVALID_VALUE", "header.format is not a FeedFormat"))?;
        let (urn, term) = term_from_pb(school_term.as_ref())?;
        let pass = caller.may_submit(urn).map_err(AppError::from)?;
        let request_id = super::limits::request_id(request_id)?;
        let max = self.app.limits().max_feed_bytes;
        if content_length > max as u64 {
            return Err(AppError::TooLarge {
                reason: "FEED_TOO_LARGE",
                message: format!(
                    "the feed ({content_length} bytes) is larger than this server accepts ({max} bytes); nothing was read"
                ),
            }
            .into());
        }
        let _slot = self.app.upload_slot(caller.key_id)?;
        let deadline = tokio::time::Instant::now() + self.app.limits().max_upload_time;
        let mut upload = Upload { app: &self.app, stream: &mut stream, permit: None, deadline };
        let body = read_body(&mut upload, content_length, format).await?;
        let source = body.source();
        let _permit = match upload.permit.take() {
            Some(p) => p,
            None => self.app.ingest_permit()?,
        };
        let result = self.app.submit_feed(pass, term, body, request_id, dry_run).await;
        let m = self.app.metrics();
        let word = match &result {
            Ok(SubmitResult::Accepted(r)) => {
                m.ingest_rows.inc_by(r.row_count as u64);
                "accepted"
            }
            Ok(SubmitResult::Unchanged(_)) => "unchanged",
            Ok(SubmitResult::Validated { .. }) => "validated",
            Err(AppError::FeedRejected { .. }) => "rejected",
            Err(AppError::TooLarge { .. }) => "too_large",
            Err(_) => "failed",
        };
        m.feeds.with_label_values(&[word]).inc();
        let (outcome, submission) = match result? {
            SubmitResult::Accepted(r) => (pb::SubmitOutcome::Accepted, submission_to_pb(&r)),
            SubmitResult::Unchanged(r) => (pb::SubmitOutcome::Unchanged, submission_to_pb(&r)),
            SubmitResult::Validated { rows, warnings, warning_count, content_sha256 } => (
                pb::SubmitOutcome::Validated,
                pb::Submission {
                    school_term,
                    source: match source {
                        FeedSource::Csv => pb::FeedSource::Csv,
                        FeedSource::Records => pb::FeedSource::Records,
                        FeedSource::Ctf => pb::FeedSource::Ctf,
                    } as i32,
                    row_count: rows as u32,
                    warning_count: warning_count as u32,
                    warnings: warnings.iter().map(|v| violation_to_pb(v, source == FeedSource::Records)).collect(),
                    content_sha256,
                    ..Default::default()
                },
            ),
        };
        Ok(Response::new(pb::SubmitFeedResponse { outcome: outcome as i32, submission: Some(submission) }))
    }

    async fn get_feed_report(
        &self,
        request: Request<pb::GetFeedReportRequest>,
    ) -> Result<Response<pb::FeedReport>, Status> {
        let caller = principal(&request)?;
        let pb::GetFeedReportRequest { report_id } = request.into_inner();
        super::limits::check_token("report_id", &report_id, 64)?;
        let r = self.app.feed_report(caller.key_id, &report_id)?;
        Ok(Response::new(pb::FeedReport {
            report_id,
            error_count: r.error_count as u64,
            errors: r.errors.iter().map(|v| violation_to_pb(v, r.records)).collect(),
            warning_count: r.warning_count as u64,
            warnings: r.warnings.iter().map(|v| violation_to_pb(v, r.records)).collect(),
        }))
    }

    async fn get_submission(
        &self,
        request: Request<pb::GetSubmissionRequest>,
    ) -> Result<Response<pb::Submission>, Status> {
        let scope = principal(&request)?.may_read_submissions().map_err(crate::app::AppError::from)?;
        let pb::GetSubmissionRequest { submission_id } = request.into_inner();
        let id = submission_id
            .parse()
            .map_err(|_| bad_field("submission_id", "INVALID_VALUE", "submission_id is not a submission id"))?;
        let rec = self.app.get_submission(scope, id).await?;
        Ok(Response::new(submission_to_pb(&rec)))
    }

    async fn list_submission_rows(
        &self,
        request: Request<pb::ListSubmissionRowsRequest>,
    ) -> Result<Response<pb::ListSubmissionRowsResponse>, Status> {
        let who = principal(&request)?;
        let scope = who.may_read_risks().map_err(AppError::from)?;
        let pb::ListSubmissionRowsRequest { submission_id, page_size, page_token } = request.into_inner();
        let id: i64 = submission_id
            .parse()
            .map_err(|_| bad_field("submission_id", "INVALID_VALUE", "submission_id is not a submission id"))?;
        let limit = ROWS.of(page_size)?;
        let q = Query::new("ListSubmissionRows", who.key_id, &submission_id);
        // A stored submission's rows never change, so an offset into their UPN order is stable.
        let offset = usize::try_from(q.position(&page_token)?.unwrap_or(0)).unwrap_or(usize::MAX);
        let rows = self.app.submission_rows(scope, id, offset, limit + 1).await?;
        let next_page_token = if rows.len() > limit { q.token((offset + limit) as u64) } else { String::new() };
        let rows = rows.iter().take(limit).map(|r| record_from_cells(&crate::synth::row_cells(r))).collect();
        Ok(Response::new(pb::ListSubmissionRowsResponse { rows, next_page_token }))
    }

    async fn list_submissions(
        &self,
        request: Request<pb::ListSubmissionsRequest>,
    ) -> Result<Response<pb::ListSubmissionsResponse>, Status> {
        let who = principal(&request)?;
        let scope = who.may_read_submissions().map_err(crate::app::AppError::from)?;
        let pb::ListSubmissionsRequest { school_urn, include_superseded, page_size: size, page_token } =
            request.into_inner();
        let school = if school_urn.is_empty() { None } else { Some(urn_from_pb("school_urn", &school_urn)?) };
        let limit = STANDARD.of(size)?;
        let q = Query::new("ListSubmissions", who.key_id, &(&school_urn, include_superseded));
        // Keyset: the token holds the last id shown; the next page has smaller ids.
        let before = q.position(&page_token)?.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
        let rows = self.app.list_submissions(scope, school, include_superseded, before, limit + 1).await?;
        let next_page_token = if rows.len() > limit { q.token(rows[limit - 1].id as u64) } else { String::new() };
        let submissions = rows.iter().take(limit).map(submission_to_pb).collect();
        Ok(Response::new(pb::ListSubmissionsResponse { submissions, next_page_token }))
    }
}
