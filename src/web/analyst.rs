//! The analyst's pages: models against the baselines, a model's card (reliability, precision
//! at capacity, fairness with the numbers), evaluate and activate, the override report, and
//! the audit chain's status.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::views::{pct, when};
use super::{FormError, Frame, Signed, Web, WebResult, charts, html, see_other};
use crate::app::AppError;
use crate::model::evaluate::{MethodMetrics, OutcomeEvaluation};

fn f3(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

pub struct ModelRow {
    pub id: String,
    pub created: String,
    pub active: bool,
    pub beats: bool,
    pub cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    frame: Frame,
    outcomes: Vec<&'static str>,
    rows: Vec<ModelRow>,
}

pub async fn models(State(web): State<Arc<Web>>, who: Signed) -> WebResult<Response> {
    let models = web.app.list_models(&who.principal).await?;
    let rows = models
        .iter()
        .map(|m| {
            let (beats, cells) = match &m.artifact {
                Ok(a) => (
                    a.beats_baselines(),
                    a.outcomes
                        .iter()
                        .map(|o| {
                            let e = &o.evaluation;
                            let best =
                                e.last_term_status.precision_at_capacity.max(e.dfe_absence_rule.precision_at_capacity);
                            format!(
                                "AUC {} · precision {:.3} (best baseline {:.3})",
                                f3(e.model.auc),
                                e.model.precision_at_capacity,
                                best
                            )
                        })
                        .collect(),
                ),
                Err(_) => (false, vec!["unreadable".into(); 3]),
            };
            ModelRow { id: m.model_id.clone(), created: when(m.created_at), active: m.active, beats, cells }
        })
        .collect();
    let outcomes = crate::domain::Outcome::ALL.iter().map(|o| o.label()).collect();
    Ok(html(&ModelsPage { frame: Frame::new("Models", Some(&who), "/models"), outcomes, rows }))
}

pub struct MetricRow {
    pub method: &'static str,
    pub auc: String,
    pub ap: String,
    pub brier: String,
    pub ece: String,
    pub precision: String,
    pub recall: String,
}

fn metric_row(method: &'static str, m: &MethodMetrics) -> MetricRow {
    MetricRow {
        method,
        auc: f3(m.auc),
        ap: f3(m.average_precision),
        brier: f3(m.brier),
        ece: f3(m.ece),
        precision: format!("{:.3}", m.precision_at_capacity),
        recall: format!("{:.3}", m.recall_at_capacity),
    }
}

pub struct FairRow {
    pub dimension: String,
    pub group: String,
    pub count: usize,
    pub selected: usize,
    pub selection_rate: String,
    pub precision: String,
    pub fnr: String,
    pub fpr: String,
    pub ratio: String,
    pub interval: String,
    pub small: bool,
    pub flagged: bool,
}

pub struct OutcomeCard {
    pub label: &'static str,
    pub test: String,
    pub metrics: Vec<MetricRow>,
    pub beats: bool,
    pub reliability_svg: String,
    pub reliability: Vec<(String, usize, String, String)>,
    pub precision_svg: String,
    pub fairness: Vec<FairRow>,
}

fn card(e: &OutcomeEvaluation) -> OutcomeCard {
    let pct = super::views::pct;
    let bins: Vec<(f64, f64)> =
        e.reliability.iter().filter(|b| b.count > 0).map(|b| (b.mean_predicted, b.observed_rate)).collect();
    let label = e.outcome.label();
    let precision = vec![
        ("model".to_string(), e.model.precision_at_capacity),
        ("last term's status".into(), e.last_term_status.precision_at_capacity),
        ("DfE absence rule".into(), e.dfe_absence_rule.precision_at_capacity),
    ];
    let fairness = e
        .fairness
        .groups
        .iter()
        .map(|g| FairRow {
            dimension: g.dimension.replace('_', " "),
            group: g.group.clone(),
            count: g.count,
            selected: g.selected,
            selection_rate: pct(g.selection_rate),
            precision: g.precision.map(pct).unwrap_or_else(|| "–".into()),
            fnr: g.false_negative_rate.map(pct).unwrap_or_else(|| "–".into()),
            fpr: g.false_positive_rate.map(pct).unwrap_or_else(|| "–".into()),
            ratio: f3(g.selection_ratio),
            interval: g.selection_ratio_ci.map(|(a, b)| format!("{a:.2}–{b:.2}")).unwrap_or_else(|| "–".into()),
            small: g.small,
            flagged: g.flagged,
        })
        .collect();
    OutcomeCard {
        label,
        test: format!(
            "{} children in {}, {} with the outcome; capacity {}",
            e.test_examples, e.test_term, e.positives, e.capacity
        ),
        metrics: vec![
            metric_row("model", &e.model),
            metric_row("last term's status", &e.last_term_status),
            metric_row("DfE absence rule", &e.dfe_absence_rule),
        ],
        beats: e.beats_baselines,
        reliability_svg: if bins.is_empty() {
            String::new()
        } else {
            charts::reliability(&bins, &format!("Reliability for {label}: predicted against observed"))
        },
        reliability: e
            .reliability
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| {
                (format!("{}–{}", pct(b.lower), pct(b.upper)), b.count, pct(b.mean_predicted), pct(b.observed_rate))
            })
            .collect(),
        precision_svg: charts::bars(&precision, &format!("Precision at capacity for {label}: model and baselines")),
        fairness,
    }
}

/// One outcome's chosen family, in words.
pub struct FamilyRow {
    pub outcome: &'static str,
    pub chosen: &'static str,
    pub auc: String,
    pub runner_up: String,
}

/// One row of live performance over all schools: a term and an outcome.
pub struct LiveRow {
    pub term: String,
    pub outcome: &'static str,
    pub children: u64,
    pub positives: u64,
    pub auc: String,
    pub last_auc: String,
    pub dfe_auc: String,
    pub precision: String,
    pub last_precision: String,
    pub ece: String,
    pub predicted: String,
    pub observed: String,
}

/// How reviewed children fared in a term, in words.
pub struct FateRow {
    pub term: String,
    pub confirmed: String,
    pub removed: String,
    pub added: String,
}

fn fate_words(f: &crate::model::live::Fate) -> String {
    match f.rate() {
        Some(r) => format!("{} of {} ({})", f.with_adverse_outcome, f.followed, pct(r)),
        None if f.children > 0 => format!("{} child(ren), none followed", f.children),
        None => "–".into(),
    }
}

#[derive(Template)]
#[template(path = "model.html")]
struct ModelPage {
    families: Vec<FamilyRow>,
    live: Vec<LiveRow>,
    fates: Vec<FateRow>,
    warnings: Vec<String>,
    frame: Frame,
    errors: Vec<FormError>,
    notice: String,
    id: String,
    active: bool,
    beats: bool,
    created: String,
    description: String,
    cards: Vec<OutcomeCard>,
    evaluated: Vec<OutcomeCard>,
    reason: String,
}

async fn model_page(web: &Web, who: &Signed, id: &str) -> WebResult<ModelPage> {
    let rec = web.app.get_model(&who.principal, id.to_owned()).await?;
    let a = rec.artifact.clone().map_err(|m| AppError::conflict("MODEL_UNREADABLE", m))?;
    let families = a
        .outcomes
        .iter()
        .map(|o| {
            let sel = &o.selection;
            let score = |f| sel.scores.iter().find(|x| x.family == f).and_then(|x| x.auc);
            FamilyRow {
                outcome: o.outcome.label(),
                chosen: sel.chosen.label(),
                auc: f3(score(sel.chosen)),
                runner_up: sel.runner_up.map_or("–".into(), |r| format!("{} (AUC {})", r.label(), f3(score(r)))),
            }
        })
        .collect();
    let perf = web.app.live_performance(&who.principal, id.to_owned()).await?;
    let mut live = Vec::new();
    let mut fates = Vec::new();
    for t in &perf.terms {
        for o in &t.outcomes {
            live.push(LiveRow {
                term: if t.within_training { format!("{} (within training)", t.term) } else { t.term.to_string() },
                outcome: o.outcome.label(),
                children: o.children as u64,
                positives: o.positives as u64,
                auc: f3(o.model.auc),
                last_auc: f3(o.last_term_status.auc),
                dfe_auc: f3(o.dfe_absence_rule.auc),
                precision: f3(Some(o.model.precision_at_capacity)),
                last_precision: f3(Some(o.last_term_status.precision_at_capacity)),
                ece: f3(Some(o.ece)),
                predicted: pct(o.mean_predicted),
                observed: pct(o.observed_rate),
            });
        }
        if let Some(c) = &t.cohort {
            fates.push(FateRow {
                term: t.term.to_string(),
                confirmed: fate_words(&c.confirmed),
                removed: fate_words(&c.removed),
                added: fate_words(&c.added),
            });
        }
    }
    Ok(ModelPage {
        families,
        live,
        fates,
        warnings: perf.warnings,
        frame: Frame::new(format!("Model {id}"), Some(who), "/models"),
        errors: Vec::new(),
        notice: String::new(),
        id: id.to_owned(),
        active: rec.active,
        beats: a.beats_baselines(),
        created: when(rec.created_at),
        description: format!(
            "{} examples from {} on; tested on {} with a fit on earlier terms. {}",
            a.training.examples, a.training.first_term, a.training.test_term, a.training.data_description
        ),
        cards: a.outcomes.iter().map(|o| card(&o.evaluation)).collect(),
        evaluated: Vec::new(),
        reason: String::new(),
    })
}

pub async fn model(State(web): State<Arc<Web>>, who: Signed, Path(id): Path<String>) -> WebResult<Response> {
    Ok(html(&model_page(&web, &who, &id).await?))
}

pub async fn evaluate(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path(id): Path<String>,
    Form(f): Form<super::session::CsrfForm>,
) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let mut page = model_page(&web, &who, &id).await?;
    match web.app.evaluate(&who.principal, id, 0).await {
        Ok(evals) => {
            page.notice = "Evaluated on the latest term with a known next term (the model as stored, no refit).".into();
            page.evaluated = evals.iter().map(card).collect();
            Ok(html(&page))
        }
        Err(e @ AppError::Conflict { .. }) => {
            page.errors = vec![FormError::new("evaluate", e.to_string())];
            Ok((StatusCode::CONFLICT, html(&page)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct ActivateForm {
    #[serde(default)]
    csrf: String,
    /// "yes" to activate although the model does not beat the baselines.
    #[serde(default)]
    force: String,
    #[serde(default)]
    reason: String,
}

pub async fn activate(
    State(web): State<Arc<Web>>,
    who: Signed,
    Path(id): Path<String>,
    Form(f): Form<ActivateForm>,
) -> WebResult<Response> {
    who.check_csrf(&f.csrf)?;
    let force = f.force == "yes";
    if force && f.reason.trim().is_empty() {
        let mut page = model_page(&web, &who, &id).await?;
        page.errors =
            vec![FormError::new("reason", "Enter why this model is activated although it does not beat the baselines")];
        return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
    }
    match web.app.activate(&who.principal, id.clone(), force, f.reason.trim().to_owned(), None).await {
        Ok(_) => Ok(see_other(&format!("/models/{id}"))),
        Err(e @ (AppError::Conflict { .. } | AppError::BadField { .. })) => {
            let mut page = model_page(&web, &who, &id).await?;
            page.errors = vec![FormError::new(if force { "reason" } else { "force-yes" }, e.to_string())];
            page.reason = f.reason;
            Ok((StatusCode::CONFLICT, html(&page)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub struct OverrideLine {
    pub dimension: String,
    pub value: String,
    pub proposed: usize,
    pub confirmed: usize,
    pub removed: usize,
    pub added: usize,
    pub rate: String,
}

#[derive(Template)]
#[template(path = "overrides.html")]
struct OverridesPage {
    frame: Frame,
    rows: Vec<OverrideLine>,
    school_chart: String,
    reason_chart: String,
}

pub async fn overrides(State(web): State<Arc<Web>>, who: Signed) -> WebResult<Response> {
    let rows = web.app.override_report(&who.principal).await?;
    let chart = |dim: &str, title: &str| {
        let items: Vec<(String, f64)> = rows
            .iter()
            .filter(|r| r.dimension == dim)
            .map(|r| (r.value.clone(), if dim == "reason" { (r.removed + r.added) as f64 } else { r.override_rate }))
            .collect();
        if items.is_empty() {
            return String::new();
        }
        if dim == "reason" {
            let total: f64 = items.iter().map(|i| i.1).sum::<f64>().max(1.0);
            let shares: Vec<(String, f64)> = items.into_iter().map(|(l, v)| (l, v / total)).collect();
            charts::bars(&shares, title)
        } else {
            charts::bars(&items, title)
        }
    };
    let page = OverridesPage {
        frame: Frame::new("Overrides", Some(&who), "/reports/overrides"),
        school_chart: chart("school", "Override rate by school"),
        reason_chart: chart("reason", "Share of changes by reason"),
        rows: rows
            .iter()
            .map(|r| OverrideLine {
                dimension: r.dimension.replace('_', " "),
                value: r.value.clone(),
                proposed: r.proposed,
                confirmed: r.confirmed,
                removed: r.removed,
                added: r.added,
                rate: super::views::pct(r.override_rate),
            })
            .collect(),
    };
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
    ok: bool,
    events: u64,
    problem: String,
}

pub async fn audit(State(web): State<Arc<Web>>, who: Signed) -> WebResult<Response> {
    let v = web.app.verify_audit(&who.principal, None).await?;
    let page = AuditPage {
        frame: Frame::new("Audit", Some(&who), "/audit"),
        ok: v.problem.is_none(),
        events: v.events,
        problem: v.problem.map(|p| format!("event {}: {}", p.seq, p.problem)).unwrap_or_default(),
    };
    Ok(html(&page))
}

pub struct OutcomeLine {
    pub place: String,
    pub horizon: u32,
    pub measure: &'static str,
    pub supported: String,
    pub seen: String,
    pub pairs: String,
    pub supported_rate: String,
    pub comparison_rate: String,
    pub difference: String,
    pub interval: String,
}

#[derive(Template)]
#[template(path = "outcomes.html")]
struct OutcomesPage {
    frame: Frame,
    cohorts: String,
    supported: String,
    matched: String,
    rows: Vec<OutcomeLine>,
}

fn value(v: crate::outcomes::Value, percent: bool) -> String {
    use crate::outcomes::Value;
    match v {
        Value::Shown(x) if percent => format!("{:.1}%", 100.0 * x),
        Value::Shown(x) => format!("{x:+.3}"),
        Value::Suppressed => "hidden (fewer than 5)".into(),
        Value::NotAvailable => "–".into(),
    }
}

/// Programme outcomes as published (small counts hidden): did the supported children do
/// better than matched children who were not supported?
pub async fn outcomes(State(web): State<Arc<Web>>, who: Signed) -> WebResult<Response> {
    use crate::outcomes::{Measure, Value};
    let p = web.app.programme_outcomes(&who.principal, None).await?;
    let rows = p
        .rows
        .iter()
        .map(|r| {
            // Rates for yes/no measures and attendance are shares; differences in points.
            let pct = true;
            let diff = match r.difference {
                Value::Shown(d) => format!("{:+.1} points", 100.0 * d),
                other => value(other, false),
            };
            let interval = match (r.interval_low, r.interval_high) {
                (Value::Shown(a), Value::Shown(b)) => format!("{:+.1} to {:+.1}", 100.0 * a, 100.0 * b),
                _ => "–".into(),
            };
            OutcomeLine {
                place: r.school.map(|u| format!("School {u}")).unwrap_or_else(|| "All schools".into()),
                horizon: r.horizon,
                measure: match r.measure {
                    Measure::AttendanceRate => "attendance",
                    Measure::PersistentAbsence => "persistent absence",
                    Measure::Suspension => "suspension or exclusion",
                    Measure::MhReferral => "mental-health referral",
                },
                supported: r.supported.to_string(),
                seen: r.seen.to_string(),
                pairs: r.pairs.to_string(),
                supported_rate: value(r.pairs_supported_rate, pct),
                comparison_rate: value(r.comparison_rate, pct),
                difference: diff,
                interval,
            }
        })
        .collect();
    Ok(html(&OutcomesPage {
        frame: Frame::new("Programme outcomes", Some(&who), "/outcomes"),
        cohorts: p.cohorts.to_string(),
        supported: p.supported.to_string(),
        matched: p.matched.to_string(),
        rows,
    }))
}
