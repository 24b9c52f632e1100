//! FeedService: school data managers submit feeds and read back submissions.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{records_to_csv, submission_to_pb, term_from_pb, urn_from_pb, violation_to_pb};
use super::pb::{self, feed_service_server::FeedService, submit_feed_request::Part};
use super::principal;
use crate::app::{App, FeedBody, SubmitResult};
use crate::storage::FeedSource;

pub struct FeedApi {
    app: Arc<App>,
}

impl FeedApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub(crate) fn page_size(requested: i32) -> usize {
    if requested <= 0 { DEFAULT_PAGE } else { (requested as usize).min(MAX_PAGE) }
}

/// Reads the whole body of a submission stream, enforcing the size limit as it goes.
async fn read_body(
    stream: &mut Streaming<pb::SubmitFeedRequest>,
    max_bytes: usize,
) -> Result<(FeedSource, Vec<u8>), Status> {
    let mut csv = Vec::new();
    let mut records = Vec::new();
    let mut record_bytes = 0usize;
    let too_big = || {
        Status::resource_exhausted(format!(
            "the feed is larger than this server accepts ({} MiB); split it or ask the operator to raise --max-feed-bytes",
            max_bytes >> 20
        ))
    };
    // A transport error (cancelled or broken stream) ends the call here: nothing is stored.
    while let Some(msg) = stream.next().await {
        match msg?.part {
            Some(Part::CsvChunk(chunk)) => {
                if csv.len() + chunk.len() > max_bytes {
                    return Err(too_big());
                }
                csv.extend_from_slice(&chunk);
            }
            Some(Part::Records(batch)) => {
                record_bytes += prost::Message::encoded_len(&batch);
                if record_bytes > max_bytes {
                    return Err(too_big());
                }
                records.extend(batch.records);
            }
            Some(Part::Header(_)) => {
                return Err(Status::invalid_argument("the header may be sent only once, first"));
            }
            None => {
                return Err(Status::invalid_argument("empty message in the submission stream"));
            }
        }
    }
    match (csv.is_empty(), records.is_empty()) {
        (false, false) => Err(Status::invalid_argument("send CSV chunks or record batches, not both")),
        (true, false) => Ok((FeedSource::Records, records_to_csv(&records))),
        _ => Ok((FeedSource::Csv, csv)),
    }
}

#[tonic::async_trait]
impl FeedService for FeedApi {
    async fn submit_feed(
        &self,
        request: Request<Streaming<pb::SubmitFeedRequest>>,
    ) -> Result<Response<pb::SubmitFeedResponse>, Status> {
        let caller = principal(&request)?;
        let mut stream = request.into_inner();
        let header = match stream.next().await.transpose()?.and_then(|m| m.part) {
            Some(Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument("the first message must be the submission header"));
            }
        };
        let pb::SubmissionHeader { school_term, request_id, dry_run, content_length } = header;
        let (urn, term) = term_from_pb(school_term.as_ref())?;
        let pass = caller.may_submit(urn).map_err(crate::app::AppError::from)?;
        let _permit = self.app.ingest_permit()?;
        let max = self.app.limits().max_feed_bytes;
        if content_length as usize > max {
            return Err(Status::resource_exhausted(format!(
                "the feed ({content_length} bytes) is larger than this server accepts ({max} bytes)"
            )));
        }
        let (source, csv) = read_body(&mut stream, max).await?;
        if source == FeedSource::Csv && content_length > 0 && csv.len() as u64 != content_length {
            return Err(Status::invalid_argument(format!(
                "the stream ended after {} of the {content_length} bytes announced in the header; nothing was stored",
                csv.len()
            )));
        }
        let request_id = (!request_id.is_empty()).then_some(request_id);
        let result = self.app.submit_feed(pass, term, FeedBody { source, csv }, request_id, dry_run).await?;
        let (outcome, submission) = match result {
            SubmitResult::Accepted(r) => (pb::SubmitOutcome::Accepted, submission_to_pb(&r)),
            SubmitResult::Unchanged(r) => (pb::SubmitOutcome::Unchanged, submission_to_pb(&r)),
            SubmitResult::Validated { rows, warnings, warning_count, content_sha256 } => (
                pb::SubmitOutcome::Validated,
                pb::Submission {
                    school_term,
                    source: match source {
                        FeedSource::Csv => pb::FeedSource::Csv,
                        FeedSource::Records => pb::FeedSource::Records,
                    } as i32,
                    row_count: rows as u32,
                    warning_count: warning_count as u32,
                    warnings: warnings.iter().map(violation_to_pb).collect(),
                    content_sha256,
                    ..Default::default()
                },
            ),
        };
        Ok(Response::new(pb::SubmitFeedResponse { outcome: outcome as i32, submission: Some(submission) }))
    }

    async fn get_submission(
        &self,
        request: Request<pb::GetSubmissionRequest>,
    ) -> Result<Response<pb::Submission>, Status> {
        let scope = principal(&request)?.may_read_submissions().map_err(crate::app::AppError::from)?;
        let pb::GetSubmissionRequest { submission_id } = request.into_inner();
        let id = submission_id
            .parse()
            .map_err(|_| Status::invalid_argument(format!("submission_id {submission_id:?} is not a submission id")))?;
        let rec = self.app.get_submission(scope, id).await?;
        Ok(Response::new(submission_to_pb(&rec)))
    }

    async fn list_submissions(
        &self,
        request: Request<pb::ListSubmissionsRequest>,
    ) -> Result<Response<pb::ListSubmissionsResponse>, Status> {
        let scope = principal(&request)?.may_read_submissions().map_err(crate::app::AppError::from)?;
        let pb::ListSubmissionsRequest { school_urn, include_superseded, page_size: size, page_token } =
            request.into_inner();
        let school = if school_urn.is_empty() { None } else { Some(urn_from_pb(&school_urn)?) };
        let before = if page_token.is_empty() {
            None
        } else {
            Some(page_token.parse::<i64>().map_err(|_| Status::invalid_argument("page_token is not valid"))?)
        };
        let limit = page_size(size);
        let rows = self.app.list_submissions(scope, school, include_superseded, before, limit + 1).await?;
        let next_page_token = if rows.len() > limit { rows[limit - 1].id.to_string() } else { String::new() };
        let submissions = rows.iter().take(limit).map(submission_to_pb).collect();
        Ok(Response::new(pb::ListSubmissionsResponse { submissions, next_page_token }))
    }
}
