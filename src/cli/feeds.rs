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
    /// School URN (6 digits); with --year, --term and FILE, for one feed.
    #[arg(long, required_unless_present = "manifest", conflicts_with = "manifest")]
    school: Option<String>,
    /// Academic year, e.g. 2025/26.
    #[arg(long, required_unless_present = "manifest", conflicts_with = "manifest")]
    year: Option<String>,
    /// autumn, spring or summer.
    #[arg(long, required_unless_present = "manifest", conflicts_with = "manifest")]
    term: Option<String>,
    /// Many feeds at once: a manifest naming school, year, term and path per feed, as JSON
    /// (the `manifest.json` that `riskid generate` writes) or CSV with the header
    /// `school,year,term,path`. Paths are relative to the manifest. Terms go in order (a
    /// term's scores use the terms before it), several feeds of a term in flight; one
    /// rejected feed does not stop the others. Exit code 3 if any feed was rejected.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Feeds in flight at once with --manifest (a key may hold 2 uploads open by default).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    jobs: u16,
    /// Validate and report only; store nothing.
    #[arg(long)]
    dry_run: bool,
    /// Optional idempotency key: a repeat returns the first result (one feed only).
    #[arg(long, conflicts_with = "manifest")]
    request_id: Option<String>,
    /// The summary's format with --manifest.
    #[command(flatten)]
    out: OutputArgs,
    /// The CTF's supplement (one feed): a CSV keyed by upn with the columns a Common
    /// Transfer File lacks: suspensions, permanent_exclusion and mh_referral (required), and
    /// optionally suspension_sessions, behaviour_incidents, cin (CIN or CPP), young_carer,
    /// sdq_*, attainment_english and attainment_maths.
    #[arg(long, value_name = "FILE", conflicts_with = "manifest")]
    supplement: Option<PathBuf>,
    /// With --manifest from `riskid generate`: send each feed's CTF and supplement rather than
    /// its CSV.
    #[arg(long, requires = "manifest")]
    ctf: bool,
    /// The feed (one feed): the contract's CSV, or a DfE Common Transfer File (XML, CTF 24 or
    /// 25; detected by its content) with --supplement.
    #[arg(required_unless_present = "manifest", conflicts_with = "manifest")]
    file: Option<PathBuf>,
}

/// A feed's files, read: the body, and a CTF's supplement.
struct Files {
    body: Vec<u8>,
    supplement: Option<Vec<u8>>,
}

/// Reads a feed (CSV, or CTF with its supplement), refusing a CTF without a supplement and a
/// supplement without a CTF.
fn read_files(file: &std::path::Path, supplement: Option<&std::path::Path>) -> Result<Files, String> {
    let body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let xml = client::looks_like_xml(&body);
    match (xml, supplement) {
        (true, None) => Err(format!(
            "{} is a Common Transfer File (XML): give its supplement with --supplement FILE (a CSV keyed by upn \
             with suspensions, permanent_exclusion and mh_referral, which a CTF does not carry)",
            file.display()
        )),
        (false, Some(_)) => Err(format!(
            "--supplement goes with a Common Transfer File, but {} is not XML: a contract CSV needs no supplement",
            file.display()
        )),
        (true, Some(p)) => {
            let s = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if s.is_empty() {
                return Err(format!(
                    "the supplement {} is empty: it needs a header row (upn,suspensions,permanent_exclusion,mh_referral,…) \
                     and a row per pupil",
                    p.display()
                ));
            }
            Ok(Files { body, supplement: Some(s) })
        }
        (false, None) => Ok(Files { body, supplement: None }),
    }
}

/// Sends a feed's files with the header (its format and length filled in here).
async fn send_files(
    c: &mut crate::api::pb::feed_service_client::FeedServiceClient<client::Authed>,
    mut header: pb::SubmissionHeader,
    files: Files,
) -> Result<tonic::Response<pb::SubmitFeedResponse>, tonic::Status> {
    match files.supplement {
        Some(supp) => {
            header.format = pb::FeedFormat::Ctf as i32;
            header.content_length = (files.body.len() + supp.len()) as u64;
            c.submit_feed(client::ctf_stream(header, files.body, supp)).await
        }
        None => {
            header.content_length = files.body.len() as u64;
            c.submit_feed(client::submission_stream(header, files.body)).await
        }
    }
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
    /// The termly rows stored for a submission, as contract CSV on standard output (for a
    /// CTF, the rows derived from it). For keys that may read that school's pupils.
    Rows {
        #[command(flatten)]
        client: ClientArgs,
        submission_id: String,
    },
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
    if let Some(m) = a.manifest.clone() {
        return bulk(a, &m).await;
    }
    let at = SchoolTermArgs {
        school: a.school.clone().unwrap_or_default(),
        year: a.year.clone().unwrap_or_default(),
        term: a.term.clone().unwrap_or_default(),
    };
    let (urn, term) = at.parse()?;
    let file = a.file.clone().unwrap_or_default();
    let files = read_files(&file, a.supplement.as_deref()).map_err(|m| fail(Exit::Usage, m))?;
    let header = pb::SubmissionHeader {
        format: 0,
        school_term: Some(crate::api::school_term_pb(urn, term)),
        request_id: a.request_id.unwrap_or_default(),
        dry_run: a.dry_run,
        content_length: 0,
    };
    let mut c = client::feed_client(&a.client).await?;
    match send_files(&mut c, header, files).await {
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

/// One feed of a manifest.
#[derive(Debug, Clone)]
struct Planned {
    urn: crate::domain::Urn,
    term: crate::domain::Term,
    path: PathBuf,
    supplement: Option<PathBuf>,
}

fn read_manifest(path: &std::path::Path, ctf: bool) -> anyhow::Result<Vec<Planned>> {
    let usage = |m: String| fail(Exit::Usage, format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read it: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned();
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let plan = |school: &str, year: &str, term: &str, file: &str, supp: Option<&str>, line: usize| {
        let urn = crate::domain::Urn::parse(school).map_err(|e| usage(format!("entry {line}: {e}")))?;
        let term = crate::domain::Term::parse(year, term).map_err(|e| usage(format!("entry {line}: {e}")))?;
        Ok::<_, anyhow::Error>(Planned {
            urn,
            term,
            path: dir.join(file),
            supplement: supp.filter(|s| !s.is_empty()).map(|s| dir.join(s)),
        })
    };
    let mut out = Vec::new();
    if text.trim_start().starts_with('{') {
        let m: crate::synth::Manifest =
            serde_json::from_str(&text).map_err(|e| usage(format!("not a riskid manifest: {e}")))?;
        for (i, f) in m.feeds.iter().enumerate() {
            let (file, supp) = match (&f.ctf, ctf) {
                (Some(c), true) => (c.file.as_str(), Some(c.supplement.as_str())),
                (None, true) => return Err(usage(format!("entry {}: the manifest names no CTF for this feed", i + 1))),
                (_, false) => (f.file.as_str(), None),
            };
            out.push(plan(&f.urn.to_string(), &f.academic_year, f.term.as_str(), file, supp, i + 1)?);
        }
    } else {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let headers: Vec<String> = r.headers()?.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
        let col = |n: &str| {
            headers.iter().position(|h| h == n).ok_or_else(|| usage(format!("the header needs a {n} column")))
        };
        let (s, y, t, p) = (col("school")?, col("year")?, col("term")?, col("path")?);
        // Optional: a CTF's supplement, beside its path.
        let sp = headers.iter().position(|h| h == "supplement");
        for (i, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| usage(format!("line {}: {e}", i + 2)))?;
            let supp = sp.and_then(|k| rec.get(k)).map(str::trim);
            out.push(plan(rec[s].trim(), rec[y].trim(), rec[t].trim(), rec[p].trim(), supp, i + 2)?);
        }
    }
    if out.is_empty() {
        return Err(usage("it names no feeds".into()));
    }
    // Two feeds for one school and term would race to be current: refuse, naming them.
    let mut seen = std::collections::BTreeSet::new();
    for f in &out {
        if !seen.insert((f.urn, f.term)) {
            return Err(usage(format!("it names two feeds for school {} in {}: keep one", f.urn, f.term)));
        }
    }
    Ok(out)
}

/// What happened to one feed of a manifest.
struct Done {
    feed: Planned,
    outcome: String,
    rows: u32,
    warnings: u32,
    detail: String,
    exit: Exit,
}

async fn send_one(
    c: &mut crate::api::pb::feed_service_client::FeedServiceClient<client::Authed>,
    f: &Planned,
    dry_run: bool,
) -> Done {
    let done = |outcome: &str, rows, warnings, detail: String, exit| Done {
        feed: f.clone(),
        outcome: outcome.into(),
        rows,
        warnings,
        detail,
        exit,
    };
    let files = match read_files(&f.path, f.supplement.as_deref()) {
        Ok(b) => b,
        Err(e) => return done("unreadable", 0, 0, e, Exit::Usage),
    };
    let header = pb::SubmissionHeader {
        format: 0,
        school_term: Some(crate::api::school_term_pb(f.urn, f.term)),
        request_id: String::new(),
        dry_run,
        content_length: 0,
    };
    match send_files(c, header, files).await {
        Ok(r) => {
            let r = r.into_inner();
            let s = r.submission.unwrap_or_default();
            let word = pb::SubmitOutcome::try_from(r.outcome)
                .map(|o| enum_word(o.as_str_name(), "SUBMIT_OUTCOME_"))
                .unwrap_or_default();
            let first = s
                .warnings
                .first()
                .map(|w| {
                    let (line, _) = crate::api::parse_field(&w.field).unwrap_or((w.line, String::new()));
                    let file = if w.field.starts_with("ctf.") {
                        "CTF "
                    } else if w.field.starts_with("supplement.") {
                        "supplement "
                    } else {
                        ""
                    };
                    format!("{file}line {line}: {}", w.message)
                })
                .unwrap_or_default();
            done(&word, s.row_count, s.warning_count, first, Exit::Ok)
        }
        Err(s) if is_rejection(&s) => {
            let rows = client::rejection_places(&s);
            let first: Vec<String> = rows
                .iter()
                .take(3)
                .map(|(place, col, _, msg)| {
                    let place = if place.starts_with(|c: char| c.is_ascii_digit()) {
                        format!("line {place}")
                    } else {
                        place.clone()
                    };
                    format!("{place} {col}: {msg}")
                })
                .collect();
            let total = {
                use tonic_types::StatusExt;
                s.get_details_error_info().and_then(|i| i.metadata.get("error_count").cloned()).unwrap_or_default()
            };
            done("rejected", 0, 0, format!("{total} error(s): {}", first.join("; ")), Exit::Rejected)
        }
        Err(s) => {
            let exit = super::exit::of(&status(s.clone()));
            done("failed", 0, 0, format!("{}: {}", s.code().description(), crate::client::safe(s.message())), exit)
        }
    }
}

async fn bulk(a: SubmitArgs, manifest: &std::path::Path) -> anyhow::Result<i32> {
    use futures::StreamExt;
    let mut plan = read_manifest(manifest, a.ctf)?;
    // Terms in order: a term's scores use the terms before it.
    plan.sort_by_key(|f| (f.term, f.urn));
    let c = client::feed_client(&a.client).await?;
    let total_rows_hint = plan.len() as u64;
    let bar = indicatif::ProgressBar::new(total_rows_hint);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} feeds  {per_sec}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut done: Vec<Done> = Vec::with_capacity(plan.len());
    let mut i = 0;
    while i < plan.len() {
        let term = plan[i].term;
        let j = plan[i..].iter().position(|f| f.term != term).map_or(plan.len(), |k| i + k);
        bar.set_message(format!("{term}"));
        let results: Vec<Done> = futures::stream::iter(plan[i..j].iter().cloned())
            .map(|f| {
                let mut c = c.clone();
                let bar = bar.clone();
                async move {
                    let d = send_one(&mut c, &f, a.dry_run).await;
                    bar.inc(1);
                    d
                }
            })
            .buffer_unordered(usize::from(a.jobs))
            .collect()
            .await;
        done.extend(results);
        i = j;
    }
    bar.finish_and_clear();
    done.sort_by_key(|d| (d.feed.term, d.feed.urn));
    let mut t = Table::new(&["school", "year", "term", "outcome", "rows", "warnings", "detail"]);
    for d in &done {
        t.push(vec![
            d.feed.urn.to_string().into(),
            d.feed.term.academic_year().into(),
            d.feed.term.name().as_str().into(),
            d.outcome.clone().into(),
            d.rows.into(),
            d.warnings.into(),
            d.detail.clone().into(),
        ]);
    }
    t.print(a.out.output)?;
    let rows: u64 = done.iter().map(|d| u64::from(d.rows)).sum();
    let count = |w: &str| done.iter().filter(|d| d.outcome == w).count();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} feeds: {} accepted, {} unchanged, {} validated, {} rejected, {} failed; {rows} rows in {secs:.1} s ({:.0} rows/s)",
        done.len(),
        count("accepted"),
        count("unchanged"),
        count("validated"),
        count("rejected"),
        done.len() - count("accepted") - count("unchanged") - count("validated") - count("rejected"),
        rows as f64 / secs.max(1e-9)
    );
    // Rejected input wins over other failures: it is what the sender can fix.
    let worst = if done.iter().any(|d| d.exit == Exit::Rejected) {
        Exit::Rejected
    } else {
        done.iter().map(|d| d.exit).find(|e| *e != Exit::Ok).unwrap_or(Exit::Ok)
    };
    Ok(worst as i32)
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
        SubmissionsCommand::Rows { client, submission_id } => {
            let mut c = client::feed_client(&client).await?;
            let mut token = String::new();
            let mut rows: Vec<[String; crate::ingest::COLUMN_COUNT]> = Vec::new();
            loop {
                let resp = c
                    .list_submission_rows(pb::ListSubmissionRowsRequest {
                        submission_id: submission_id.clone(),
                        page_size: 2_000,
                        page_token: token,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                rows.extend(resp.rows.iter().map(crate::api::record_cells));
                if resp.next_page_token.is_empty() {
                    break;
                }
                token = resp.next_page_token;
            }
            use std::io::Write;
            // Pupil rows go to standard output only, never through the log.
            std::io::stdout().write_all(&crate::ingest::cells_to_csv(&rows))?;
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
