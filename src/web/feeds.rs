//! The school data manager's pages: upload a term's feed (or check it first), the report with
//! every error and warning next to its cell, submission history; and pupils' scores, read only.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::views::{RiskView, when};
use super::{FormError, Frame, Signed, Web, WebError, WebResult, html};
use crate::app::{AppError, FeedBody, SubmitResult};
use crate::auth::UseCase;
use crate::domain::{SchoolTerm, Term, TermName, Urn};
use crate::ingest::{Part, Violation};

pub struct SubmissionRow {
    pub id: i64,
    pub school: String,
    pub term: String,
    pub state: String,
    pub source: String,
    pub rows: usize,
    pub warnings: usize,
    pub received: String,
}

/// A violation with the cell it is about, as the file had it.
pub struct ViolationRow {
    pub file: &'static str,
    pub line: String,
    pub column: String,
    pub cell: String,
    pub code: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "feeds.html")]
struct FeedsPage {
    frame: Frame,
    errors: Vec<FormError>,
    can_submit: bool,
    schools: Vec<String>,
    school: String,
    year: String,
    term: String,
    history: Vec<SubmissionRow>,
    /// The outcome of the upload just made, in words.
    outcome: String,
    outcome_ok: bool,
    problems: Vec<ViolationRow>,
    problem_count: usize,
    warnings: Vec<ViolationRow>,
    warning_count: usize,
    max_mb: String,
}

impl FeedsPage {
    fn problem_caption(&self) -> String {
        format!("Errors: {} (each must be corrected)", self.problem_count)
    }
    fn warning_caption(&self) -> String {
        format!("Warnings: {} (accepted, but worth checking)", self.warning_count)
    }
}

fn row_of(s: &crate::storage::SubmissionRecord) -> SubmissionRow {
    SubmissionRow {
        id: s.id,
        school: s.school_term.urn.to_string(),
        term: s.school_term.term.to_string(),
        state: format!("{:?}", s.state).to_lowercase(),
        source: match s.source {
            crate::storage::FeedSource::Csv => "CSV".into(),
            crate::storage::FeedSource::Records => "records".into(),
            crate::storage::FeedSource::Ctf => "CTF".into(),
        },
        rows: s.row_count,
        warnings: s.warning_count,
        received: when(s.received_at),
    }
}

fn current_year() -> String {
    let now = time::OffsetDateTime::now_utc();
    let y = if u8::from(now.month()) >= 9 { now.year() } else { now.year() - 1 };
    format!("{y}/{:02}", (y + 1) % 100)
}

async fn page(web: &Web, who: &Signed) -> WebResult<FeedsPage> {
    let scope = who.principal.may_read_submissions()?;
    let history = web.app.list_submissions(scope, None, true, None, 100).await?;
    let schools: Vec<String> = who.principal.schools.iter().map(|u| u.to_string()).collect();
    Ok(FeedsPage {
        frame: Frame::new("Feeds", Some(who), "/feeds"),
        errors: Vec::new(),
        can_submit: who.principal.may(UseCase::SubmitFeed).is_ok(),
        school: schools.first().cloned().unwrap_or_default(),
        schools,
        year: current_year(),
        term: String::new(),
        history: history.iter().map(row_of).collect(),
        outcome: String::new(),
        outcome_ok: false,
        problems: Vec::new(),
        problem_count: 0,
        warnings: Vec::new(),
        warning_count: 0,
        max_mb: format!("{:.0}", web.app.limits().max_feed_bytes as f64 / (1 << 20) as f64),
    })
}

pub async fn list(State(web): State<Arc<Web>>, who: Signed) -> WebResult<Response> {
    Ok(html(&page(&web, &who).await?))
}

/// The cells a report quotes, by (line, column name): only the lines its violations name,
/// read with the line numbers the validator uses (the physical line a record starts on), so
/// the cell beside an error is that line's.
struct Cells {
    header: Vec<String>,
    lines: std::collections::HashMap<u64, Vec<String>>,
}

impl Cells {
    fn of(bytes: &[u8], violations: &[&Violation]) -> Self {
        let wanted: std::collections::HashSet<u64> = violations.iter().map(|v| v.line).collect();
        let last = wanted.iter().copied().max().unwrap_or(0);
        // The validator's own reader: the same line numbers, blank lines and quoted line
        // breaks counted alike.
        let mut r = crate::ingest::csv_reader::Reader::new(bytes);
        let mut header = Vec::new();
        let mut lines = std::collections::HashMap::new();
        let mut rec = crate::ingest::csv_reader::Record::default();
        let text = |c: &[u8]| String::from_utf8_lossy(c).chars().take(60).collect::<String>();
        loop {
            match r.next(&mut rec) {
                crate::ingest::csv_reader::Next::End => break,
                // A broken record: its cells cannot be shown; the violation says why.
                crate::ingest::csv_reader::Next::Error(_) => continue,
                crate::ingest::csv_reader::Next::Record => {}
            }
            if rec.line > last {
                break;
            }
            if header.is_empty() {
                header = rec.iter().map(text).collect();
            }
            if wanted.contains(&rec.line) {
                lines.insert(rec.line, rec.iter().map(text).collect());
            }
        }
        Self { header, lines }
    }

    fn cell(&self, line: u64, column: &str) -> Option<&str> {
        let i = self.header.iter().position(|h| h.trim() == column)?;
        self.lines.get(&line)?.get(i).map(String::as_str)
    }
}

/// The cells of the feed and the supplement that these violations are about, read off the
/// async threads.
async fn cells_for(
    feed: Option<Arc<Vec<u8>>>,
    supplement: Option<Arc<Vec<u8>>>,
    vs: Vec<Violation>,
) -> (Option<Cells>, Option<Cells>) {
    tokio::task::spawn_blocking(move || {
        let of = |part: Part| vs.iter().filter(|v| v.part == part).collect::<Vec<_>>();
        (feed.map(|b| Cells::of(&b, &of(Part::Feed))), supplement.map(|b| Cells::of(&b, &of(Part::Supplement))))
    })
    .await
    .unwrap_or((None, None))
}

fn violation_rows(vs: &[Violation], feed: Option<&Cells>, supplement: Option<&Cells>) -> Vec<ViolationRow> {
    vs.iter()
        .map(|v| {
            let cells = match v.part {
                Part::Feed => feed,
                Part::Supplement => supplement,
                Part::Ctf => None,
            };
            let cell = cells.and_then(|c| c.cell(v.line, &v.column)).map(|c| {
                let c: String = c.chars().take(60).collect();
                if c.is_empty() { "(empty)".to_string() } else { c }
            });
            ViolationRow {
                file: match v.part {
                    Part::Feed => "feed",
                    Part::Ctf => "CTF",
                    Part::Supplement => "supplement",
                },
                line: if v.line == 0 { "–".into() } else { v.line.to_string() },
                column: if v.element.is_empty() { v.column.clone() } else { format!("{} ({})", v.column, v.element) },
                cell: cell.unwrap_or_else(|| "–".into()),
                code: v.code.clone(),
                message: v.message.clone(),
            }
        })
        .collect()
}

struct Upload {
    csrf: String,
    school: String,
    year: String,
    term: String,
    dry_run: bool,
    file: Option<(String, Vec<u8>)>,
    supplement: Option<Vec<u8>>,
}

/// Reads the form, counting every byte against one limit (the feed and its supplement
/// together, as over gRPC), with the gRPC idle limit between chunks.
async fn read_upload(mut mp: Multipart, max: usize, idle: std::time::Duration) -> Result<Upload, WebError> {
    let mut u = Upload {
        csrf: String::new(),
        school: String::new(),
        year: String::new(),
        term: String::new(),
        dry_run: false,
        file: None,
        supplement: None,
    };
    let too_large = || {
        WebError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The file is too large",
            format!("A feed (with its supplement) may be at most {max} bytes; nothing was stored."),
        )
    };
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            WebError::new(
                StatusCode::BAD_REQUEST,
                "The upload failed",
                "The form could not be read; nothing was stored. Try again.",
            )
        }
    };
    let stalled = || {
        WebError::new(
            StatusCode::REQUEST_TIMEOUT,
            "The upload stalled",
            format!("The upload sent nothing for {} s and was ended; nothing was stored.", idle.as_secs()),
        )
    };
    let mut total = 0usize;
    loop {
        let field = tokio::time::timeout(idle, mp.next_field()).await.map_err(|_| stalled())?.map_err(bad)?;
        let Some(mut field) = field else { break };
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().unwrap_or_default().to_owned();
        let small = !matches!(name.as_str(), "file" | "supplement");
        let mut bytes = Vec::new();
        while let Some(chunk) = tokio::time::timeout(idle, field.chunk()).await.map_err(|_| stalled())?.map_err(bad)? {
            total += chunk.len();
            // Form fields are short; only the files may be large.
            if total > max || (small && bytes.len() + chunk.len() > 4096) {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
        match name.as_str() {
            "csrf" => u.csrf = text(),
            "school" => u.school = text(),
            "year" => u.year = text(),
            "term" => u.term = text(),
            "dry_run" => u.dry_run = !bytes.is_empty(),
            "file" if !bytes.is_empty() => u.file = Some((filename, bytes)),
            "supplement" if !bytes.is_empty() => u.supplement = Some(bytes),
            _ => {}
        }
    }
    Ok(u)
}

pub async fn upload(State(web): State<Arc<Web>>, who: Signed, mp: Multipart) -> WebResult<Response> {
    let limits = web.app.limits().clone();
    who.principal.may(UseCase::SubmitFeed)?;
    // The same limits as over gRPC: size (the body limit and per file), one key's share of
    // uploads, and the longest an upload may take.
    let _slot = web.app.upload_slot(who.principal.key_id)?;
    // The server-wide ingest slot is held while the upload streams, as over gRPC.
    let _permit = web.app.ingest_permit()?;
    let read = read_upload(mp, limits.max_feed_bytes, limits.ingest_idle_timeout);
    let u = match tokio::time::timeout(limits.max_upload_time, read).await {
        Ok(u) => u?,
        Err(_) => {
            return Err(WebError::new(
                StatusCode::REQUEST_TIMEOUT,
                "The upload took too long",
                format!("An upload may take at most {} s; nothing was stored.", limits.max_upload_time.as_secs()),
            ));
        }
    };
    who.check_csrf(&u.csrf)?;
    let mut p = page(&web, &who).await?;
    p.school = u.school.clone();
    p.year = u.year.clone();
    p.term = u.term.clone();
    let mut errors = Vec::new();
    let urn = u.school.parse::<u32>().ok().and_then(|n| Urn::new(n).ok());
    if urn.is_none() {
        errors.push(FormError::new("school", "Choose the school"));
    }
    let name: Option<TermName> = u.term.parse().ok();
    if name.is_none() {
        errors.push(FormError::new("term-autumn", "Choose the term"));
    }
    let term = name.and_then(|n| match Term::parse(&u.year, n.as_str()) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(FormError::new("year", format!("Enter the academic year like 2025/26 ({e})")));
            None
        }
    });
    if u.file.is_none() {
        errors.push(FormError::new("file", "Choose the feed file (CSV, or a Common Transfer File in XML)"));
    }
    let (Some(urn), Some(term), Some((filename, bytes)), true) = (urn, term, u.file, errors.is_empty()) else {
        p.errors = errors;
        return Ok((StatusCode::BAD_REQUEST, html(&p)).into_response());
    };
    let pass = who.principal.may_submit(urn)?;
    let is_ctf = filename.to_ascii_lowercase().ends_with(".xml") || bytes.trim_ascii_start().starts_with(b"<");
    let feed_bytes = (!is_ctf).then(|| Arc::new(bytes.clone()));
    let supp_bytes = u.supplement.clone().map(Arc::new);
    let body = if is_ctf { FeedBody::Ctf { xml: bytes, supplement: u.supplement } } else { FeedBody::Csv(bytes) };
    let st = SchoolTerm { urn, term };
    let result = web.app.submit_feed(pass, term, body, None, u.dry_run).await;
    let quoted: Vec<Violation> = match &result {
        Ok(SubmitResult::Accepted(r)) => r.warnings.clone(),
        Ok(SubmitResult::Validated { warnings, .. }) => warnings.clone(),
        Err(AppError::FeedRejected { report, .. }) => report.errors.iter().chain(&report.warnings).cloned().collect(),
        _ => Vec::new(),
    };
    let (feed_cells, supp_cells) =
        if quoted.is_empty() { (None, None) } else { cells_for(feed_bytes, supp_bytes, quoted).await };
    let status = match result {
        Ok(SubmitResult::Accepted(r)) => {
            p.outcome = format!(
                "Accepted: {} pupils for school {} in {}, stored and scored (submission {}).",
                r.row_count, st.urn, st.term, r.id
            );
            p.outcome_ok = true;
            p.warnings = violation_rows(&r.warnings, feed_cells.as_ref(), supp_cells.as_ref());
            p.warning_count = r.warning_count;
            StatusCode::OK
        }
        Ok(SubmitResult::Unchanged(r)) => {
            p.outcome = format!(
                "Unchanged: this is the feed already stored for school {} in {} (submission {}).",
                st.urn, st.term, r.id
            );
            p.outcome_ok = true;
            StatusCode::OK
        }
        Ok(SubmitResult::Validated { rows, warnings, warning_count, .. }) => {
            p.outcome =
                format!("Checked: the feed is valid ({rows} pupils). This was a check only: nothing was stored.");
            p.outcome_ok = true;
            p.warnings = violation_rows(&warnings, feed_cells.as_ref(), supp_cells.as_ref());
            p.warning_count = warning_count;
            StatusCode::OK
        }
        Err(AppError::FeedRejected { report, .. }) => {
            p.outcome = format!(
                "Rejected: the feed has {} error(s), listed below with their line and column. Nothing was stored; \
                 correct the file and upload it again.",
                report.error_count
            );
            p.problems = violation_rows(&report.errors, feed_cells.as_ref(), supp_cells.as_ref());
            p.problem_count = report.error_count;
            p.warnings = violation_rows(&report.warnings, feed_cells.as_ref(), supp_cells.as_ref());
            p.warning_count = report.warning_count;
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(e @ (AppError::TooLarge { .. } | AppError::BadField { .. } | AppError::Conflict { .. })) => {
            p.errors = vec![FormError::new("file", e.to_string())];
            StatusCode::BAD_REQUEST
        }
        Err(e) => return Err(e.into()),
    };
    // The history now includes this upload.
    if let Ok(scope) = who.principal.may_read_submissions()
        && let Ok(h) = web.app.list_submissions(scope, None, true, None, 100).await
    {
        p.history = h.iter().map(row_of).collect();
    }
    Ok((status, html(&p)).into_response())
}

#[derive(Template)]
#[template(path = "submission.html")]
struct SubmissionPage {
    frame: Frame,
    row: SubmissionRow,
    sha: String,
    warnings: Vec<ViolationRow>,
    warning_count: usize,
}

impl SubmissionPage {
    fn warning_caption(&self) -> String {
        format!("Warnings: {}", self.warning_count)
    }
}

pub async fn submission(State(web): State<Arc<Web>>, who: Signed, Path(id): Path<String>) -> WebResult<Response> {
    let id: i64 = id.parse().map_err(|_| WebError::not_found("submission"))?;
    let scope = who.principal.may_read_submissions()?;
    let s = web.app.get_submission(scope, id).await?;
    Ok(html(&SubmissionPage {
        frame: Frame::new(format!("Submission {id}"), Some(&who), "/feeds"),
        row: row_of(&s),
        sha: s.content_sha256.clone(),
        warnings: violation_rows(&s.warnings, None, None),
        warning_count: s.warning_count,
    }))
}

#[derive(Deserialize)]
pub struct RisksQuery {
    #[serde(default)]
    school_term: String,
    /// 1-based page of [`PAGE`] pupils.
    #[serde(default)]
    page: Option<usize>,
}

/// Pupils per page of scores.
const PAGE: usize = 100;

#[derive(Template)]
#[template(path = "risks.html")]
struct RisksPage {
    frame: Frame,
    options: Vec<(String, String)>,
    chosen: String,
    heading: String,
    urn: String,
    term_index: u32,
    pupils: Vec<RiskView>,
    message: String,
    /// Rank of the first pupil on this page, less one.
    offset: usize,
    page: usize,
    pages: usize,
}

pub async fn risks(State(web): State<Arc<Web>>, who: Signed, Query(q): Query<RisksQuery>) -> WebResult<Response> {
    who.principal.may(UseCase::ReadRisks)?;
    let options = super::cohorts::school_terms(&web, &who).await?;
    let chosen =
        if q.school_term.is_empty() { options.first().map(|o| o.0.clone()).unwrap_or_default() } else { q.school_term };
    let mut page = RisksPage {
        frame: Frame::new("Pupils' scores", Some(&who), "/risks"),
        options,
        chosen: chosen.clone(),
        heading: String::new(),
        urn: String::new(),
        term_index: 0,
        pupils: Vec::new(),
        message: String::new(),
        offset: 0,
        page: 1,
        pages: 1,
    };
    let Some(st) = super::cohorts::parse_school_term(&chosen) else {
        page.message = "No scores yet: a school's scores appear once its first feed is accepted.".into();
        return Ok(html(&page));
    };
    match web.app.school_risks(&who.principal, st, None, None).await {
        Ok((model, rs)) => {
            page.heading = format!("School {}, {} — {} pupils, scored by {model}", st.urn, st.term, rs.len());
            page.pages = rs.len().div_ceil(PAGE).max(1);
            page.page = q.page.unwrap_or(1).clamp(1, page.pages);
            page.offset = (page.page - 1) * PAGE;
            page.pupils = rs.iter().skip(page.offset).take(PAGE).map(|r| RiskView::new(r, web.pid(&r.upn))).collect();
        }
        Err(e @ (AppError::NotReady(_) | AppError::NotFound { .. })) => page.message = e.to_string(),
        Err(e) => return Err(e.into()),
    }
    page.urn = st.urn.to_string();
    page.term_index = st.term.index();
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "pupil.html")]
struct PupilPage {
    frame: Frame,
    heading: String,
    risk: RiskView,
    chart: String,
    attendance: Vec<(String, String)>,
    back: String,
}

pub async fn pupil(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path((urn, term, pid)): Path<(String, String, String)>,
) -> WebResult<Response> {
    let st = super::cohorts::parse_school_term(&format!("{urn}:{term}")).ok_or_else(|| WebError::not_found("pupil"))?;
    let (_, rs) = web.app.school_risks(&who.principal, st, None, None).await?;
    let r = rs.iter().find(|r| web.pid(&r.upn) == pid).ok_or_else(|| WebError::not_found("pupil"))?;
    let upn = crate::domain::Upn::parse(&r.upn).map_err(|_| WebError::not_found("pupil"))?;
    let (chart, attendance) = super::cohorts::attendance(&web, &who, &upn).await?;
    Ok(html(&PupilPage {
        frame: Frame::new("A pupil's scores", Some(&who), "/risks"),
        heading: format!("Year {} pupil at school {}, {}", r.ncyear, st.urn, st.term),
        risk: RiskView::new(r, pid),
        chart,
        attendance,
        back: format!("/risks?school_term={}:{}", st.urn, st.term.index()),
    }))
}
