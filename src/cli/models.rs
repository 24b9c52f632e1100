//! `riskid model`: train, list, show, evaluate and activate models; build the bundled default.

use std::path::PathBuf;

use clap::Subcommand;
use tokio_stream::StreamExt;

use super::enum_word;
use super::exit::status;
use super::output::{Cell, Format, OutputArgs, Table};
use crate::api::pb::{self, model_service_client::ModelServiceClient};
use crate::client::{Authed, ClientArgs, connect};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Train from the server's history (progress is shown), then print the new model's card.
    Train {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value_t = 36)]
        capacity: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// List models (every page); the active one is marked.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// A model's card (text), or its metrics per outcome (json, csv).
    Show {
        #[command(flatten)]
        client: ClientArgs,
        model_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Re-evaluate a stored model on the server's latest labelled term, against the baselines.
    Evaluate {
        #[command(flatten)]
        client: ClientArgs,
        model_id: String,
        /// Cohort capacity per school (default: the model's).
        #[arg(long, default_value_t = 0)]
        capacity: u32,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Recompute a model's reported figures from the server's stored feeds with the
    /// evaluation model its artifact keeps, and print every figure that differs. Exits 0
    /// when every figure is reproduced exactly, 7 otherwise.
    Verify {
        #[command(flatten)]
        client: ClientArgs,
        model_id: String,
    },
    /// How a model's live scores did once each next term's feeds arrived: per term and
    /// outcome, all schools then each school, against the baselines, with calibration and how
    /// reviewed children fared. Warnings (below a baseline, ECE above 0.03) go to stderr.
    Live {
        #[command(flatten)]
        client: ClientArgs,
        model_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Activate a model (rescoring each school's latest term). Refused unless it beats the baselines,
    /// or --force with --reason (audited).
    Activate {
        #[command(flatten)]
        client: ClientArgs,
        model_id: String,
        #[arg(long)]
        force: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Score one school term's current submission with a stored model and make those scores the
    /// live ones for that term (audited).
    Rescore {
        #[command(flatten)]
        client: ClientArgs,
        model_id: String,
        #[command(flatten)]
        at: super::SchoolTermArgs,
    },
    /// Train the bundled default model on a generated synthetic world (no server) and write
    /// the artifact and its model card.
    BuildDefault(BuildDefaultArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildDefaultArgs {
    /// Schools in the synthetic world.
    #[arg(long, default_value_t = 40)]
    schools: usize,
    /// Academic years.
    #[arg(long, default_value_t = 3)]
    years: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Cohort capacity per school for evaluation at capacity.
    #[arg(long, default_value_t = 36)]
    capacity: usize,
    /// Artifact path; the card is written beside it as .card.md.
    #[arg(long, default_value = "models/default.json")]
    out: PathBuf,
}

async fn client(c: &ClientArgs) -> anyhow::Result<ModelServiceClient<Authed>> {
    let (ch, bearer) = connect(c).await?;
    Ok(ModelServiceClient::with_interceptor(ch, bearer))
}

fn outcome_word(o: i32) -> String {
    pb::Outcome::try_from(o).map(|x| enum_word(x.as_str_name(), "OUTCOME_")).unwrap_or_default()
}

/// One row per outcome and method: the figures behind "beats the baselines".
fn evaluations(model_id: &str, evals: &[pb::OutcomeEvaluation], format: Format) -> anyhow::Result<()> {
    let mut t = Table::new(&[
        "model_id",
        "outcome",
        "method",
        "auc",
        "average_precision",
        "brier",
        "ece",
        "precision_at_capacity",
        "recall_at_capacity",
        "test_examples",
        "positives",
        "capacity",
        "beats_baselines",
    ]);
    for e in evals {
        for (method, m) in
            [("model", &e.model), ("last_term_status", &e.last_term_status), ("dfe_absence_rule", &e.dfe_absence_rule)]
        {
            let m = m.unwrap_or_default();
            t.push(vec![
                model_id.to_owned().into(),
                outcome_word(e.outcome).into(),
                method.into(),
                m.auc.into(),
                m.average_precision.into(),
                m.brier.into(),
                m.ece.into(),
                Cell::Num(m.precision_at_capacity),
                Cell::Num(m.recall_at_capacity),
                e.test_examples.into(),
                e.positives.into(),
                e.capacity.into(),
                e.beats_baselines.into(),
            ]);
        }
    }
    t.print(format)
}

/// One row per term, scope (all schools, then each school) and outcome.
fn live_table(r: &pb::LivePerformance, format: Format) -> anyhow::Result<()> {
    let mut t = Table::new(&[
        "term",
        "school",
        "outcome",
        "children",
        "positives",
        "auc",
        "last_term_status_auc",
        "dfe_rule_auc",
        "precision_at_capacity",
        "last_term_status_precision",
        "dfe_rule_precision",
        "mean_predicted",
        "observed_rate",
        "ece",
        "confirmed_adverse",
        "removed_adverse",
        "added_adverse",
    ]);
    let fate = |c: &Option<pb::CohortFates>, pick: fn(&pb::CohortFates) -> &Option<pb::Fate>| -> Cell {
        match c.as_ref().and_then(|c| pick(c).as_ref()) {
            Some(f) if f.followed > 0 => format!("{}/{}", f.with_adverse_outcome, f.followed).into(),
            _ => "".into(),
        }
    };
    for term in &r.terms {
        let when = term.term.as_ref().map(|t| {
            let name =
                pb::TermName::try_from(t.term).map(|n| enum_word(n.as_str_name(), "TERM_NAME_")).unwrap_or_default();
            format!("{} {name}", t.academic_year)
        });
        let when = when.map(|w| if term.within_training { format!("{w} (within training)") } else { w });
        let scopes = std::iter::once(("all".to_string(), &term.outcomes, &term.cohort))
            .chain(term.schools.iter().map(|s| (s.school_urn.clone(), &s.outcomes, &s.cohort)));
        for (school, outcomes, cohort) in scopes {
            for o in outcomes {
                let m = |x: &Option<pb::LiveMetrics>| x.unwrap_or_default();
                let (mo, lt, dfe) = (m(&o.model), m(&o.last_term_status), m(&o.dfe_absence_rule));
                t.push(vec![
                    when.clone().unwrap_or_default().into(),
                    school.clone().into(),
                    outcome_word(o.outcome).into(),
                    o.children.into(),
                    o.positives.into(),
                    mo.auc.into(),
                    lt.auc.into(),
                    dfe.auc.into(),
                    Cell::Num(mo.precision_at_capacity),
                    Cell::Num(lt.precision_at_capacity),
                    Cell::Num(dfe.precision_at_capacity),
                    Cell::Num(o.mean_predicted),
                    Cell::Num(o.observed_rate),
                    Cell::Num(o.ece),
                    fate(cohort, |c| &c.confirmed),
                    fate(cohort, |c| &c.removed),
                    fate(cohort, |c| &c.added),
                ]);
            }
        }
    }
    t.print(format)
}

pub async fn run(cmd: ModelCommand) -> anyhow::Result<i32> {
    match cmd {
        ModelCommand::BuildDefault(args) => build_default(args),
        ModelCommand::Train { client: cl, capacity, seed } => {
            let mut c = client(&cl).await?;
            let mut s = c
                .train_model(pb::TrainModelRequest { capacity, seed, ..Default::default() })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(m) = s.next().await {
                match m.map_err(status)?.event {
                    Some(pb::train_model_progress::Event::Message(m)) => eprintln!("  {}", crate::client::safe(&m)),
                    Some(pb::train_model_progress::Event::Model(m)) => {
                        crate::out!("{}", m.card);
                        crate::out!("model id: {} (beats baselines: {})", m.model_id, m.beats_baselines);
                    }
                    None => {}
                }
            }
            Ok(0)
        }
        ModelCommand::List { client: cl, out } => {
            let mut c = client(&cl).await?;
            let mut t = Table::new(&[
                "active",
                "model_id",
                "created",
                "beats_baselines",
                "examples",
                "seed",
                "data_fingerprint",
            ]);
            let mut token = String::new();
            loop {
                let page = c
                    .list_models(pb::ListModelsRequest { page_size: 500, page_token: token, ..Default::default() })
                    .await
                    .map_err(status)?
                    .into_inner();
                for m in &page.models {
                    let tr = m.training.clone().unwrap_or_default();
                    t.push(vec![
                        m.active.into(),
                        m.model_id.clone().into(),
                        crate::app::rfc3339(m.create_time.map_or(0, |t| t.seconds)).into(),
                        m.beats_baselines.into(),
                        tr.examples.into(),
                        Cell::Text(tr.seed.to_string()),
                        tr.data_fingerprint.into(),
                    ]);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            t.print(out.output)?;
            Ok(0)
        }
        ModelCommand::Show { client: cl, model_id, out } => {
            let mut c = client(&cl).await?;
            let m = c
                .get_model(pb::GetModelRequest { model_id, view: pb::ModelView::Full as i32 })
                .await
                .map_err(status)?
                .into_inner();
            match out.output {
                Format::Text => crate::out!("{}", m.card),
                f => evaluations(&m.model_id, &m.evaluations, f)?,
            }
            Ok(0)
        }
        ModelCommand::Live { client: cl, model_id, out } => {
            let mut c = client(&cl).await?;
            let r =
                c.get_live_performance(pb::GetLivePerformanceRequest { model_id }).await.map_err(status)?.into_inner();
            if r.terms.is_empty() {
                eprintln!(
                    "model {}: no live scores have a next term yet (live performance needs the term after)",
                    r.model_id
                );
            }
            live_table(&r, out.output)?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            Ok(0)
        }
        ModelCommand::Verify { client: cl, model_id } => {
            let mut c = client(&cl).await?;
            let req = pb::EvaluateModelRequest { model_id, capacity: 0, reproduce: true };
            let r = c.evaluate_model(req).await.map_err(status)?.into_inner();
            let figures: usize = r.evaluations.len();
            if r.differences.is_empty() {
                crate::out!(
                    "model {}: every reported figure reproduced exactly from the stored feeds ({figures} outcomes, \
                     with the evaluation model the artifact keeps)",
                    r.model_id
                );
                Ok(0)
            } else {
                crate::out!("model {}: {} figure(s) differ:", r.model_id, r.differences.len());
                for d in &r.differences {
                    crate::out!("  {d}");
                }
                Ok(super::Exit::AuditFailed as i32)
            }
        }
        ModelCommand::Evaluate { client: cl, model_id, capacity, out } => {
            let mut c = client(&cl).await?;
            let r = c
                .evaluate_model(pb::EvaluateModelRequest { model_id, capacity, reproduce: false })
                .await
                .map_err(status)?
                .into_inner();
            evaluations(&r.model_id, &r.evaluations, out.output)?;
            Ok(0)
        }
        ModelCommand::Rescore { client: cl, model_id, at } => {
            let mut c = client(&cl).await?;
            let req = pb::RescoreSchoolTermRequest { school_term: Some(at.pb()?), model_id, request_id: String::new() };
            let r = c.rescore_school_term(req).await.map_err(status)?.into_inner();
            crate::out!("rescored {} pupils with model {}", r.pupils_rescored, r.model_id);
            Ok(0)
        }
        ModelCommand::Activate { client: cl, model_id, force, reason } => {
            let mut c = client(&cl).await?;
            let r = c
                .activate_model(pb::ActivateModelRequest { model_id, force, reason, request_id: String::new() })
                .await
                .map_err(status)?
                .into_inner();
            crate::out!("activated; rescored {} pupils in {} schools", r.pupils_rescored, r.schools_rescored);
            Ok(0)
        }
    }
}

fn build_default(args: BuildDefaultArgs) -> anyhow::Result<i32> {
    let BuildDefaultArgs { schools, years, seed, capacity, out } = args;
    let cfg = crate::synth::WorldConfig { schools, years, seed, ..Default::default() };
    eprintln!("generating a synthetic world: {schools} schools, {years} years, seed {seed}");
    let world = crate::synth::generate(&cfg).map_err(anyhow::Error::msg)?;
    let history = crate::model::History::from_rows(world.feeds.into_iter().flat_map(|f| {
        let st = crate::domain::SchoolTerm { urn: f.urn, term: f.term };
        f.rows.into_iter().map(move |r| (st, r))
    }));
    let started = std::time::Instant::now();
    let artifact = crate::model::train_and_evaluate(
        &history,
        crate::model::TrainParams { seed, capacity, ..Default::default() },
        crate::model::TrainRequest {
            model_id: Some(format!("default-synthetic-{schools}x{years}-s{seed}")),
            // Fixed, so rebuilding gives the same bytes.
            created_at: "built by `riskid model build-default`".into(),
            data_description: format!(
                "SYNTHETIC data only: a generated borough of {schools} schools over {years} years (seed {seed}); \
                 no real pupil's data."
            ),
            progress: &mut |m| eprintln!("  {:>6.2} s  {m}", started.elapsed().as_secs_f64()),
        },
    )?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, artifact.to_json())?;
    let card = out.with_extension("card.md");
    std::fs::write(&card, artifact.model_card())?;
    eprintln!("trained in {:.2} s", started.elapsed().as_secs_f64());
    crate::out!("wrote {} and {}", out.display(), card.display());
    Ok(0)
}
