//! Cohort pages: the link worker's review (confirm, remove, add, undo, finalise), and the
//! read-only view for schools and analysts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::views::{RiskView, pct, when};
use super::{FormError, Frame, Signed, Web, WebError, WebResult, charts, html, see_other};
use crate::app::{AppError, DecisionInput, ProposeInput};
use crate::auth::UseCase;
use crate::cohort::{CohortParams, Policy};
use crate::domain::{SchoolTerm, Term, Upn, Urn};
use crate::review::{AddReason, Cohort, CohortState, Kind, RemoveReason};
use crate::storage::CohortFilter;

pub struct CohortRow {
    pub id: i64,
    pub school: String,
    pub term: String,
    pub state: &'static str,
    pub proposed: u32,
    pub decided: u32,
    pub kept: u32,
    pub capacity: usize,
}

#[derive(Template)]
#[template(path = "cohorts.html")]
struct CohortsPage {
    frame: Frame,
    errors: Vec<FormError>,
    rows: Vec<CohortRow>,
    can_propose: bool,
    options: Vec<(String, String)>,
    capacity: String,
}

pub fn state_words(s: CohortState) -> &'static str {
    match s {
        CohortState::Proposed => "Proposed",
        CohortState::InReview => "In review",
        CohortState::Finalised => "Finalised",
        CohortState::Replaced => "Replaced",
    }
}

/// The school terms with a current feed that the caller may see: (value, label), newest first.
pub(super) async fn school_terms(web: &Web, who: &Signed) -> WebResult<Vec<(String, String)>> {
    let scope = who.principal.may_read_submissions()?;
    let subs = web.app.list_submissions(scope, None, false, None, 500).await?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in subs {
        let st = s.school_term;
        if seen.insert((std::cmp::Reverse(st.term), st.urn)) {
            out.push((std::cmp::Reverse(st.term), st.urn));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(t, u)| (format!("{}:{}", u, t.0.index()), format!("School {u}, {}", t.0))).collect())
}

async fn list_page(web: &Web, who: &Signed, errors: Vec<FormError>, capacity: String) -> WebResult<Response> {
    let cohorts =
        web.app.list_cohorts(&who.principal, CohortFilter { limit: 200, ..Default::default() }, false).await?;
    let rows = cohorts
        .into_iter()
        .map(|(c, n)| CohortRow {
            id: c.id,
            school: c.school_term.urn.to_string(),
            term: c.school_term.term.to_string(),
            state: state_words(c.state),
            proposed: n.proposed,
            decided: n.decided,
            kept: n.kept,
            capacity: c.params.capacity,
        })
        .collect();
    let can_propose = who.principal.may(UseCase::ProposeCohort).is_ok();
    let options = if can_propose { school_terms(web, who).await? } else { Vec::new() };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let page = CohortsPage {
        frame: Frame::new("Cohorts", Some(who), "/cohorts"),
        errors,
        rows,
        can_propose,
        options,
        capacity,
    };
    Ok((status, html(&page)).into_response())
}

pub async fn list(State(web): State<Arc<Web>>, who: Signed) -> WebResult<Response> {
    list_page(&web, &who, Vec::new(), "36".into()).await
}

#[derive(Deserialize)]
pub struct ProposeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    school_term: String,
    #[serde(default)]
    capacity: String,
}

pub(super) fn parse_school_term(v: &str) -> Option<SchoolTerm> {
    let (u, t) = v.split_once(':')?;
    let urn = Urn::new(u.parse().ok()?).ok()?;
    let ti: u32 = t.parse().ok()?;
    (6000..=6300).contains(&ti).then(|| SchoolTerm { urn, term: Term::from_index(ti) })
}

pub async fn propose(State(web): State<Arc<Web>>, who: Signed, Form(f): Form<ProposeForm>) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let mut errors = Vec::new();
    let st = parse_school_term(&f.school_term);
    if st.is_none() {
        errors.push(FormError::new("school_term", "Choose a school and term"));
    }
    let capacity = f.capacity.trim().parse::<usize>().ok().filter(|c| (1..=crate::cohort::MAX_CAPACITY).contains(c));
    if capacity.is_none() {
        errors.push(FormError::new(
            "capacity",
            format!("Enter the number of places, a whole number from 1 to {}", crate::cohort::MAX_CAPACITY),
        ));
    }
    let (Some(st), Some(capacity)) = (st, capacity) else {
        return list_page(&web, &who, errors, f.capacity).await;
    };
    let params = CohortParams { capacity, min_year: 0, max_year: 13, policy: Policy::AnyAdverse, seed: 42 };
    match web
        .app
        .propose_cohort(&who.principal, ProposeInput { school_term: st, params, force: false, request_id: None })
        .await
    {
        Ok(c) => Ok(see_other(&format!("/cohorts/{}", c.id))),
        Err(e @ (AppError::Conflict { .. } | AppError::NotFound { .. } | AppError::NotReady(_))) => {
            list_page(&web, &who, vec![FormError::new("school_term", e.to_string())], f.capacity).await
        }
        Err(e) => Err(e.into()),
    }
}

pub struct MemberRow {
    pub pid: String,
    pub rank: String,
    pub risk: Option<RiskView>,
    pub decision: String,
    pub decision_class: &'static str,
    pub decided_by: String,
    pub decided: bool,
    pub kept: bool,
}

pub struct DecisionLine {
    pub at: String,
    pub by: String,
    pub what: String,
}

#[derive(Template)]
#[template(path = "cohort.html")]
struct CohortPage {
    frame: Frame,
    errors: Vec<FormError>,
    notice: String,
    id: i64,
    school: String,
    term: String,
    state: &'static str,
    model_id: String,
    capacity: usize,
    decided: usize,
    undecided: usize,
    kept: usize,
    over: usize,
    members: Vec<MemberRow>,
    log: Vec<DecisionLine>,
    can_review: bool,
    open: bool,
    over_capacity_reason: String,
    finalised_at: String,
}

fn decision_words(m: &crate::review::Member) -> (String, &'static str) {
    match &m.decided {
        None => ("Not decided".into(), "tag-grey"),
        Some(d) => match d.decision.kind() {
            Kind::Confirm => ("Confirmed".into(), "tag-green"),
            Kind::Add => (
                format!(
                    "Added: {}",
                    d.decision.reason_code().and_then(AddReason::parse).map(|r| r.label()).unwrap_or("")
                ),
                "tag-blue",
            ),
            Kind::Remove => (
                format!(
                    "Removed: {}",
                    d.decision.reason_code().and_then(RemoveReason::parse).map(|r| r.label()).unwrap_or("")
                ),
                "tag-red",
            ),
        },
    }
}

async fn labels(web: &Web) -> HashMap<i64, String> {
    web.app.key_labels().await.unwrap_or_default()
}

fn cohort_page(web: &Web, who: &Signed, c: &Cohort, labels: &HashMap<i64, String>) -> CohortPage {
    let by = |id: i64| labels.get(&id).cloned().unwrap_or_else(|| format!("key {id}"));
    let members: Vec<MemberRow> = c
        .members
        .iter()
        .map(|m| {
            let (decision, decision_class) = decision_words(m);
            let pid = web.pid(m.upn.as_str());
            MemberRow {
                rank: m.rank.map(|r| r.to_string()).unwrap_or_else(|| "added".into()),
                risk: m.shown.as_ref().map(|r| RiskView::new(r, pid.clone())),
                pid,
                decision,
                decision_class,
                decided_by: m.decided.as_ref().map(|d| format!("{}, {}", by(d.by), when(d.at))).unwrap_or_default(),
                decided: m.decided.is_some(),
                kept: m.decided.as_ref().is_some_and(|d| d.decision.keeps()),
            }
        })
        .collect();
    let mut log: Vec<(i64, DecisionLine)> = c
        .members
        .iter()
        .filter_map(|m| {
            let d = m.decided.as_ref()?;
            let (what, _) = decision_words(m);
            let note = d.decision.note().filter(|n| !n.is_empty()).map(|n| format!(" — “{n}”")).unwrap_or_default();
            let who = m.shown.as_ref().map(|r| format!("Year {} child", r.ncyear)).unwrap_or_else(|| "A child".into());
            Some((d.at, DecisionLine { at: when(d.at), by: by(d.by), what: format!("{who}: {what}{note}") }))
        })
        .collect();
    log.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let decided = members.iter().filter(|m| m.decided).count();
    let kept = members.iter().filter(|m| m.kept).count();
    let open = matches!(c.state, CohortState::Proposed | CohortState::InReview);
    CohortPage {
        frame: Frame::new(format!("Cohort for school {}", c.school_term.urn), Some(who), "/cohorts"),
        errors: Vec::new(),
        notice: String::new(),
        id: c.id,
        school: c.school_term.urn.to_string(),
        term: c.school_term.term.to_string(),
        state: state_words(c.state),
        model_id: c.model_id.clone(),
        capacity: c.params.capacity,
        decided,
        undecided: members.len() - decided,
        kept,
        over: kept.saturating_sub(c.params.capacity),
        members,
        log: log.into_iter().map(|(_, l)| l).collect(),
        can_review: who.principal.may_review(c.school_term.urn).is_ok(),
        open,
        over_capacity_reason: c.over_capacity_reason.clone().unwrap_or_default(),
        finalised_at: c.finalised_at.map(when).unwrap_or_default(),
    }
}

pub async fn show(State(web): State<Arc<Web>>, who: Signed, Path(id): Path<String>) -> WebResult<Response> {
    let id = cohort_id(&id)?;
    let c = web.app.get_cohort_by_id(&who.principal, id).await?;
    let page = cohort_page(&web, &who, &c, &labels(&web).await);
    Ok(html(&page))
}

/// The cohort page again, with what went wrong (or a notice) at the top.
async fn cohort_with(web: &Web, who: &Signed, id: i64, errors: Vec<FormError>, notice: &str) -> WebResult<Response> {
    let c = web.app.get_cohort_by_id(&who.principal, id).await?;
    let mut page = cohort_page(web, who, &c, &labels(web).await);
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::CONFLICT };
    page.errors = errors;
    page.notice = notice.into();
    Ok((status, html(&page)).into_response())
}

/// Turns a refused review action into words on the cohort page (a race, a rule), or an
/// error page for anything else.
async fn refused(web: &Web, who: &Signed, id: i64, field: &str, e: AppError) -> WebResult<Response> {
    let message = match &e {
        AppError::Aborted { .. } => format!(
            "Someone else recorded a decision for this child at the same time, so yours was not saved. The page now \
             shows their decision; undo it first if you disagree. ({e})"
        ),
        AppError::BadField { description, .. } => description.clone(),
        AppError::Conflict { .. } | AppError::NotFound { .. } => e.to_string(),
        _ => return Err(e.into()),
    };
    cohort_with(web, who, id, vec![FormError::new(field, message)], "").await
}

pub struct ReasonOption {
    pub code: &'static str,
    pub label: &'static str,
}

#[derive(Template)]
#[template(path = "member.html")]
struct MemberPage {
    frame: Frame,
    errors: Vec<FormError>,
    cohort_id: i64,
    school: String,
    term: String,
    row: MemberRow,
    chart: String,
    attendance: Vec<(String, String)>,
    can_review: bool,
    open: bool,
    remove_reasons: Vec<ReasonOption>,
    note: String,
}

fn remove_reasons() -> Vec<ReasonOption> {
    RemoveReason::ALL.iter().map(|r| ReasonOption { code: r.code(), label: r.label() }).collect()
}

fn add_reasons() -> Vec<ReasonOption> {
    AddReason::ALL.iter().map(|r| ReasonOption { code: r.code(), label: r.label() }).collect()
}

/// The attendance chart and its table for one child.
pub(super) async fn attendance(web: &Web, who: &Signed, upn: &Upn) -> WebResult<(String, Vec<(String, String)>)> {
    let terms = web.app.pupil_attendance(&who.principal, upn.clone()).await?;
    let points: Vec<(String, Option<f64>)> = terms
        .iter()
        .map(|(st, a)| {
            let t = st.term;
            (format!("{} {}", &t.name().as_str()[..3], t.academic_year().get(2..).unwrap_or_default()), *a)
        })
        .collect();
    let table = terms
        .iter()
        .map(|(st, a)| (st.term.to_string(), a.map(pct).unwrap_or_else(|| "not recorded".into())))
        .collect();
    let chart = if points.is_empty() {
        String::new()
    } else {
        charts::attendance(&points, "Attendance over terms; the orange line is 90%, below which absence is persistent")
    };
    Ok((chart, table))
}

async fn member_page(
    web: &Web,
    who: &Signed,
    c: &Cohort,
    pid: &str,
    errors: Vec<FormError>,
    note: String,
) -> WebResult<Response> {
    let Some(m) = c.members.iter().find(|m| web.pid(m.upn.as_str()) == pid) else {
        return Err(WebError::not_found("child in this cohort"));
    };
    let labels = labels(web).await;
    let page = cohort_page(web, who, c, &labels);
    let row = page.members.into_iter().find(|r| r.pid == pid).expect("the member is in the page");
    let (chart, attendance) = attendance(web, who, &m.upn).await?;
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let page = MemberPage {
        frame: Frame::new(
            format!("{} in the cohort", row.risk.as_ref().map_or("Child", |r| r.year.as_str())),
            Some(who),
            "/cohorts",
        ),
        errors,
        cohort_id: c.id,
        school: c.school_term.urn.to_string(),
        term: c.school_term.term.to_string(),
        row,
        chart,
        attendance,
        can_review: page.can_review,
        open: page.open,
        remove_reasons: remove_reasons(),
        note,
    };
    Ok((status, html(&page)).into_response())
}

pub async fn member(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path((id, pid)): Path<(String, String)>,
) -> WebResult<Response> {
    let id = cohort_id(&id)?;
    let c = web.app.get_cohort_by_id(&who.principal, id).await?;
    member_page(&web, &who, &c, &pid, Vec::new(), String::new()).await
}

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
    /// Where to go after: the cohort (default) or the child's page.
    #[serde(default)]
    back: String,
}

pub async fn decide(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path((id, pid)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let id = cohort_id(&id)?;
    let c = web.app.get_cohort_by_id(&who.principal, id).await?;
    let upn = web
        .find_pid(c.members.iter().map(|m| m.upn.as_str()), &pid)
        .ok_or_else(|| WebError::not_found("child in this cohort"))?;
    let kind = match f.decision.as_str() {
        "confirm" => Kind::Confirm,
        "remove" => Kind::Remove,
        _ => {
            let e = FormError::new("decision", "Choose whether to confirm or remove this child");
            return member_page(&web, &who, &c, &pid, vec![e], f.note).await;
        }
    };
    if kind == Kind::Remove && RemoveReason::parse(&f.reason).is_none() {
        let e = FormError::new("reason", "Choose why this child is removed");
        return member_page(&web, &who, &c, &pid, vec![e], f.note).await;
    }
    let reason = if kind == Kind::Remove { f.reason.clone() } else { String::new() };
    let note = if kind == Kind::Remove { f.note.trim().to_owned() } else { String::new() };
    let input = DecisionInput { cohort_id: id, upn, kind, reason_code: reason, note, request_id: None };
    match web.app.decide(&who.principal, input).await {
        Ok(_) if f.back == "member" => Ok(see_other(&format!("/cohorts/{id}/members/{pid}"))),
        Ok(_) => Ok(see_other(&format!("/cohorts/{id}#m-{pid}"))),
        Err(AppError::BadField { field, description, .. }) if field == "note" => {
            member_page(&web, &who, &c, &pid, vec![FormError::new("note", description)], f.note).await
        }
        Err(e) => refused(&web, &who, id, "members", e).await,
    }
}

pub async fn undo(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path((id, pid)): Path<(String, String)>,
    Form(f): Form<super::session::CsrfForm>,
) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let id = cohort_id(&id)?;
    let c = web.app.get_cohort_by_id(&who.principal, id).await?;
    let upn = web
        .find_pid(c.members.iter().map(|m| m.upn.as_str()), &pid)
        .ok_or_else(|| WebError::not_found("child in this cohort"))?;
    match web.app.undo(&who.principal, id, upn, None).await {
        Ok(_) => Ok(see_other(&format!("/cohorts/{id}#m-{pid}"))),
        Err(e) => refused(&web, &who, id, "members", e).await,
    }
}

#[derive(Template)]
#[template(path = "add.html")]
struct AddPage {
    frame: Frame,
    errors: Vec<FormError>,
    cohort_id: i64,
    school: String,
    term: String,
    found: Option<RiskView>,
    pid: String,
    reasons: Vec<ReasonOption>,
    note: String,
    chosen: String,
}

fn cohort_id(raw: &str) -> WebResult<i64> {
    raw.parse().map_err(|_| WebError::not_found("cohort"))
}

/// A cohort the caller may review (another school's reads as absent).
async fn reviewable(web: &Web, who: &Signed, id: i64) -> WebResult<Cohort> {
    let c = web.app.get_cohort_by_id(&who.principal, id).await?;
    who.principal.may_review(c.school_term.urn)?;
    Ok(c)
}

struct AddForm0<'a> {
    found: Option<RiskView>,
    pid: String,
    note: String,
    chosen: String,
    errors: Vec<FormError>,
    who: &'a Signed,
}

fn add_page(c: &Cohort, a: AddForm0<'_>) -> AddPage {
    AddPage {
        frame: Frame::new("Add a child", Some(a.who), "/cohorts"),
        errors: a.errors,
        cohort_id: c.id,
        school: c.school_term.urn.to_string(),
        term: c.school_term.term.to_string(),
        found: a.found,
        pid: a.pid,
        reasons: add_reasons(),
        note: a.note,
        chosen: a.chosen,
    }
}

#[derive(Deserialize)]
pub struct FindForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    upn: String,
}

/// Finds a child on roll by UPN (sent in the form body, never the URL) and shows their scores
/// before they are added.
pub async fn find(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path(id): Path<String>,
    Form(f): Form<FindForm>,
) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let id = cohort_id(&id)?;
    let c = reviewable(&web, &who, id).await?;
    let mk = |errors, found, pid| {
        add_page(&c, AddForm0 { found, pid, note: String::new(), chosen: String::new(), errors, who: &who })
    };
    let upn = match Upn::parse(f.upn.trim()) {
        Ok(u) => u,
        Err(e) => {
            let page = mk(
                vec![FormError::new("upn", format!("Enter the child's 13-character UPN: {e}"))],
                None,
                String::new(),
            );
            return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
        }
    };
    if c.member(&upn).is_some() {
        let pid = web.pid(upn.as_str());
        return Ok(see_other(&format!("/cohorts/{id}/members/{pid}")));
    }
    let (_, risks) = web.app.school_risks(&who.principal, c.school_term, None, None).await?;
    match risks.iter().find(|r| r.upn == upn.as_str()) {
        Some(r) => {
            let pid = web.pid(&r.upn);
            Ok(html(&mk(Vec::new(), Some(RiskView::new(r, pid.clone())), pid)))
        }
        None => {
            let e = FormError::new(
                "upn",
                format!("No child with that UPN is on roll at school {} in {}", c.school_term.urn, c.school_term.term),
            );
            Ok((StatusCode::NOT_FOUND, html(&mk(vec![e], None, String::new()))).into_response())
        }
    }
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

pub async fn add(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path(id): Path<String>,
    Form(f): Form<AddForm>,
) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let id = cohort_id(&id)?;
    let c = reviewable(&web, &who, id).await?;
    let (_, risks) = web.app.school_risks(&who.principal, c.school_term, None, None).await?;
    let Some(r) = risks.iter().find(|r| web.pid(&r.upn) == f.pid) else {
        return Err(WebError::not_found("child on roll"));
    };
    let upn = Upn::parse(&r.upn).map_err(|_| WebError::not_found("child on roll"))?;
    let again = |errors: Vec<FormError>| {
        let found = Some(RiskView::new(r, f.pid.clone()));
        add_page(
            &c,
            AddForm0 { found, pid: f.pid.clone(), note: f.note.clone(), chosen: f.reason.clone(), errors, who: &who },
        )
    };
    if AddReason::parse(&f.reason).is_none() {
        let page = again(vec![FormError::new("reason", "Choose why this child is added")]);
        return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
    }
    let input = DecisionInput {
        cohort_id: id,
        upn,
        kind: Kind::Add,
        reason_code: f.reason.clone(),
        note: f.note.trim().to_owned(),
        request_id: None,
    };
    match web.app.decide(&who.principal, input).await {
        Ok(_) => Ok(see_other(&format!("/cohorts/{id}#m-{}", f.pid))),
        Err(AppError::BadField { field, description, .. }) => {
            let field = if field == "note" { "note" } else { "reason" };
            Ok((StatusCode::BAD_REQUEST, html(&again(vec![FormError::new(field, description)]))).into_response())
        }
        Err(e) => refused(&web, &who, id, "upn", e).await,
    }
}

#[derive(Deserialize)]
pub struct FinaliseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    over_capacity_reason: String,
}

pub async fn finalise(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path(id): Path<String>,
    Form(f): Form<FinaliseForm>,
) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let id = cohort_id(&id)?;
    let c = web.app.get_cohort_by_id(&who.principal, id).await?;
    let kept = c.final_list().len();
    let undecided = c.members.iter().filter(|m| m.decided.is_none()).count();
    if undecided == 0 && kept > c.params.capacity && f.over_capacity_reason.trim().is_empty() {
        let e = FormError::new(
            "over_capacity_reason",
            format!("Say why the list has {kept} children for {} places", c.params.capacity),
        );
        return cohort_with(&web, &who, id, vec![e], "").await;
    }
    match web.app.finalise(&who.principal, id, f.over_capacity_reason.trim().to_owned(), None).await {
        Ok(_) => cohort_with(&web, &who, id, Vec::new(), "The cohort is finalised: the programme can start.").await,
        Err(AppError::BadField { description, .. }) => {
            cohort_with(&web, &who, id, vec![FormError::new("over_capacity_reason", description)], "").await
        }
        Err(e) => refused(&web, &who, id, "finalise", e).await,
    }
}
