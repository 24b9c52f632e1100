//! `riskid submit` and `riskid submissions`: school data managers' feeds.

use std::path::PathBuf;

use clap::Subcommand;

use super::exit::{Exit, fail, status};
use super::output::{OutputArgs, Table};
use super::{SchoolTermArgs, enum_word};
use crate::api::pb;
use crate::client::{self, ClientArgs};

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    at: SchoolTermArgs,
    /// Validate and report only; store nothing.
    #[arg(long)]
    dry_run: bool,
    /// Optional idempotency key: a repeat returns the first result.
    #[arg(long)]
    request_id: Option<String>,
    /// The CSV file.
    file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum SubmissionsCommand {
    /// List submissions, newest first (every page).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this school.
        #[arg(long)]
        school: Option<String>,
        /// Include superseded submissions.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// One submission, with its warnings.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        submission_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
    let (urn, term) = a.at.parse()?;
    let csv =
        std::fs::read(&a.file).map_err(|e| fail(Exit::Usage, format!("cannot read {}: {e}", a.file.display())))?;
    let header = pb::SubmissionHeader {
        school_term: Some(crate::api::school_term_pb(urn, term)),
        request_id: a.request_id.unwrap_or_default(),
        dry_run: a.dry_run,
        content_length: csv.len() as u64,
    };
    let mut c = client::feed_client(&a.client).await?;
    match c.submit_feed(client::submission_stream(header, csv)).await {
        Ok(resp) => {
            let r = resp.into_inner();
            let outcome = pb::SubmitOutcome::try_from(r.outcome).unwrap_or(pb::SubmitOutcome::Unspecified);
            client::print_submission(outcome, &r.submission.unwrap_or_default());
            Ok(0)
        }
        Err(s) if is_rejection(&s) => {
            client::print_rejection(&mut c, &s).await;
            Ok(Exit::Rejected as i32)
        }
        Err(s) => Err(status(s)),
    }
}

/// A feed the contract rejects (not a malformed request): its report is printed.
fn is_rejection(s: &tonic::Status) -> bool {
    use tonic_types::StatusExt;
    s.get_details_error_info().is_some_and(|i| i.reason == "FEED_REJECTED")
}

fn submission_row(t: &mut Table, s: &pb::Submission) {
    let st = s.school_term.clone().unwrap_or_default();
    let term = pb::TermName::try_from(st.term).map(|t| enum_word(t.as_str_name(), "TERM_NAME_")).unwrap_or_default();
    let state = pb::SubmissionState::try_from(s.state)
        .map(|t| enum_word(t.as_str_name(), "SUBMISSION_STATE_"))
        .unwrap_or_default();
    let received = s.received_at.map(|t| crate::app::rfc3339(t.seconds)).unwrap_or_default();
    t.push(vec![
        s.submission_id.clone().into(),
        st.school_urn.into(),
        st.academic_year.into(),
        term.into(),
        state.into(),
        s.row_count.into(),
        s.warning_count.into(),
        received.into(),
        s.content_sha256.clone().into(),
    ]);
}

const COLUMNS: &[&str] = &["id", "school", "year", "term", "state", "rows", "warnings", "received", "sha256"];

pub async fn submissions(cmd: SubmissionsCommand) -> anyhow::Result<i32> {
    match cmd {
        SubmissionsCommand::List { client, school, all, out } => {
            let mut c = client::feed_client(&client).await?;
            let mut t = Table::new(COLUMNS);
            let mut token = String::new();
            loop {
                let resp = c
                    .list_submissions(pb::ListSubmissionsRequest {
                        school_urn: school.clone().unwrap_or_default(),
                        include_superseded: all,
                        page_size: 500,
                        page_token: token,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                for s in &resp.submissions {
                    submission_row(&mut t, s);
                }
                if resp.next_page_token.is_empty() {
                    break;
                }
                token = resp.next_page_token;
            }
            t.print(out.output)?;
        }
        SubmissionsCommand::Show { client, submission_id, out } => {
            let mut c = client::feed_client(&client).await?;
            let s = c.get_submission(pb::GetSubmissionRequest { submission_id }).await.map_err(status)?.into_inner();
            if out.output != super::output::Format::Text {
                // One document: the submission with its warnings inside.
                let mut cols = COLUMNS.to_vec();
                cols.push("warning_list");
                let mut t = Table::new(&cols);
                let mut row = Table::new(COLUMNS);
                submission_row(&mut row, &s);
                let warnings: Vec<serde_json::Value> = s
                    .warnings
                    .iter()
                    .map(|v| serde_json::json!({"line": v.line, "column": v.column, "code": v.code, "message": v.message}))
                    .collect();
                let mut cells = row.into_rows().pop().unwrap_or_default();
                cells.push(super::output::Cell::Json(warnings.into(), String::new()));
                t.push(cells);
                t.print(out.output)?;
                return Ok(0);
            }
            let mut t = Table::new(COLUMNS);
            submission_row(&mut t, &s);
            t.print(out.output)?;
            if !s.warnings.is_empty() {
                let mut w = Table::new(&["line", "column", "code", "message"]);
                for v in &s.warnings {
                    w.push(vec![
                        v.line.into(),
                        v.column.clone().into(),
                        v.code.clone().into(),
                        v.message.clone().into(),
                    ]);
                }
                println!();
                w.print(out.output)?;
            }
        }
    }
    Ok(0)
}
