//! `riskid cohort`: proposals and the link worker's review.

use clap::Subcommand;

use super::exit::{Exit, fail, status};
use super::output::{Cell, Format, OutputArgs, Table};
use super::risks::print_risk_line;
use super::{SchoolTermArgs, enum_word};
use crate::api::pb::{self, cohort_service_client::CohortServiceClient};
use crate::client::{ClientArgs, connect};

#[derive(Debug, Subcommand)]
pub enum CohortCommand {
    /// Propose a cohort from the active model's scores.
    Propose {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        at: SchoolTermArgs,
        /// Children the school's link workers can support (1 to 500).
        #[arg(long, default_value_t = 36)]
        capacity: u32,
        /// Year groups in the programme (0 = Reception).
        #[arg(long, default_value_t = 0)]
        min_year: u32,
        #[arg(long, default_value_t = 13)]
        max_year: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace a cohort already in review.
        #[arg(long)]
        force: bool,
    },
    /// Show a school term's cohort with each child's reasons and decision.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        at: SchoolTermArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List cohorts, newest first (every page), optionally for one school.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        school: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Confirm a proposed child.
    Confirm {
        #[command(flatten)]
        client: ClientArgs,
        cohort_id: String,
        upn: String,
    },
    /// Remove a proposed child, with a reason code and note.
    Remove {
        #[command(flatten)]
        client: ClientArgs,
        cohort_id: String,
        upn: String,
        /// already_supported, family_declined, data_wrong, professional_judgement, statutory_involvement, left_school, other
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Add a child the model did not propose, with a reason code and note.
    Add {
        #[command(flatten)]
        client: ClientArgs,
        cohort_id: String,
        upn: String,
        /// professional_judgement, school_concern, family_request, data_missing, other
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Undo a decision before finalising.
    Undo {
        #[command(flatten)]
        client: ClientArgs,
        cohort_id: String,
        upn: String,
    },
    /// Finalise once every proposed child has a decision.
    Finalise {
        #[command(flatten)]
        client: ClientArgs,
        cohort_id: String,
        /// Needed when the final list is over capacity.
        #[arg(long, default_value = "")]
        over_capacity_reason: String,
    },
}

fn state_word(s: i32) -> String {
    pb::CohortState::try_from(s).map(|s| enum_word(s.as_str_name(), "COHORT_STATE_")).unwrap_or_default()
}

fn decision_word(d: i32) -> String {
    match pb::DecisionKind::try_from(d) {
        Ok(pb::DecisionKind::Unspecified) | Err(_) => "undecided".into(),
        Ok(k) => enum_word(k.as_str_name(), "DECISION_KIND_"),
    }
}

fn print_cohort(c: &pb::Cohort, format: Format) -> anyhow::Result<()> {
    if format != Format::Text {
        let mut t = Table::new(&[
            "cohort_id",
            "state",
            "model_id",
            "rank",
            "upn",
            "proposed",
            "decision",
            "reason_code",
            "note",
            "any_adverse",
            "decided_at",
        ]);
        for m in &c.members {
            t.push(vec![
                c.cohort_id.clone().into(),
                state_word(c.state).into(),
                c.model_id.clone().into(),
                m.rank.into(),
                m.upn.clone().into(),
                m.proposed.into(),
                decision_word(m.decision).into(),
                m.reason_code.clone().into(),
                m.note.clone().into(),
                m.risk.as_ref().map_or(Cell::Empty, |r| Cell::Prob(r.any_adverse)),
                m.decide_time.map(|t| crate::app::rfc3339(t.seconds)).unwrap_or_default().into(),
            ]);
        }
        return t.print(format);
    }
    crate::out!(
        "cohort {} ({}), model {}, capacity {}, {} eligible ({} statutory, {} in a programme, {} permanently excluded, {} outside the years left out); {} of {} decided",
        c.cohort_id,
        state_word(c.state),
        c.model_id,
        c.capacity,
        c.eligible,
        c.excluded_statutory,
        c.excluded_in_programme,
        c.excluded_permanently,
        c.excluded_year_group,
        c.decided_count,
        c.members.len()
    );
    for m in &c.members {
        let why = if m.reason_code.is_empty() { String::new() } else { format!(" ({}: {})", m.reason_code, m.note) };
        crate::out!(
            "  #{:<3} {}{why}",
            if m.proposed { m.rank.to_string() } else { "+".into() },
            decision_word(m.decision)
        );
        if let Some(r) = &m.risk {
            print_risk_line("       ", r);
        }
    }
    Ok(())
}

pub async fn run(cmd: CohortCommand) -> anyhow::Result<i32> {
    use CohortCommand::*;
    let client = match &cmd {
        Propose { client, .. }
        | Show { client, .. }
        | List { client, .. }
        | Confirm { client, .. }
        | Remove { client, .. }
        | Add { client, .. }
        | Undo { client, .. }
        | Finalise { client, .. } => client.clone(),
    };
    let (ch, bearer) = connect(&client).await?;
    let mut c = CohortServiceClient::with_interceptor(ch, bearer);
    let decide = |cohort_id: String, upn: String, kind: pb::DecisionKind, reason: String, note: String| {
        pb::RecordDecisionRequest {
            cohort_id,
            upn,
            decision: kind as i32,
            reason_code: reason,
            note,
            request_id: String::new(),
        }
    };
    let mut format = Format::Text;
    let cohort = match cmd {
        Propose { at, capacity, min_year, max_year, seed, force, .. } => {
            let req = pb::ProposeCohortRequest {
                school_term: Some(at.pb()?),
                capacity,
                min_year: Some(min_year),
                max_year: Some(max_year),
                policy: None,
                seed,
                force,
                request_id: String::new(),
            };
            c.propose_cohort(req).await
        }
        Show { at, out, .. } => {
            format = out.output;
            let st = at.pb()?;
            let found = c
                .list_cohorts(pb::ListCohortsRequest {
                    school_urn: st.school_urn,
                    academic_year: st.academic_year,
                    term: st.term,
                    page_size: 1,
                    view: pb::CohortView::Full as i32,
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            match found.cohorts.into_iter().next() {
                Some(cohort) => Ok(tonic::Response::new(cohort)),
                None => return Err(fail(Exit::NotFound, "no cohort for that school and term: propose one first")),
            }
        }
        List { school, out, .. } => {
            let mut t = Table::new(&[
                "cohort_id",
                "school",
                "year",
                "term",
                "state",
                "model_id",
                "capacity",
                "proposed",
                "decided",
                "final",
                "created",
                "finalised",
            ]);
            let mut token = String::new();
            loop {
                let page = c
                    .list_cohorts(pb::ListCohortsRequest {
                        school_urn: school.clone().unwrap_or_default(),
                        page_size: 500,
                        page_token: token,
                        ..Default::default()
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                for k in &page.cohorts {
                    let st = k.school_term.clone().unwrap_or_default();
                    let term = pb::TermName::try_from(st.term)
                        .map(|x| enum_word(x.as_str_name(), "TERM_NAME_"))
                        .unwrap_or_default();
                    t.push(vec![
                        k.cohort_id.clone().into(),
                        st.school_urn.into(),
                        st.academic_year.into(),
                        term.into(),
                        state_word(k.state).into(),
                        k.model_id.clone().into(),
                        k.capacity.into(),
                        k.proposed_count.into(),
                        k.decided_count.into(),
                        k.final_count.into(),
                        k.create_time.map(|t| crate::app::rfc3339(t.seconds)).unwrap_or_default().into(),
                        k.finalise_time.map(|t| crate::app::rfc3339(t.seconds)).unwrap_or_default().into(),
                    ]);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            t.print(out.output)?;
            return Ok(0);
        }
        Confirm { cohort_id, upn, .. } => {
            c.record_decision(decide(cohort_id, upn, pb::DecisionKind::Confirm, String::new(), String::new())).await
        }
        Remove { cohort_id, upn, reason, note, .. } => {
            c.record_decision(decide(cohort_id, upn, pb::DecisionKind::Remove, reason, note)).await
        }
        Add { cohort_id, upn, reason, note, .. } => {
            c.record_decision(decide(cohort_id, upn, pb::DecisionKind::Add, reason, note)).await
        }
        Undo { cohort_id, upn, .. } => {
            c.undo_decision(pb::UndoDecisionRequest { cohort_id, upn, request_id: String::new() }).await
        }
        Finalise { cohort_id, over_capacity_reason, .. } => {
            c.finalise_cohort(pb::FinaliseCohortRequest { cohort_id, over_capacity_reason, request_id: String::new() })
                .await
        }
    };
    print_cohort(&cohort.map_err(status)?.into_inner(), format)?;
    Ok(0)
}
