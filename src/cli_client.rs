//! Client commands for scores, models, cohorts and the audit trail.

use clap::Subcommand;
use tokio_stream::StreamExt;

use crate::api::pb::{
    self, audit_service_client::AuditServiceClient, cohort_service_client::CohortServiceClient,
    model_service_client::ModelServiceClient, risk_service_client::RiskServiceClient,
};
use crate::client::{ClientArgs, connect};
use crate::domain::{Term, Urn};

/// Which school and term.
#[derive(Debug, Clone, clap::Args)]
pub struct SchoolTermArgs {
    /// School URN (6 digits).
    #[arg(long)]
    pub school: String,
    /// Academic year, e.g. 2025/26.
    #[arg(long)]
    pub year: String,
    /// autumn, spring or summer.
    #[arg(long)]
    pub term: String,
}

impl SchoolTermArgs {
    fn pb(&self) -> anyhow::Result<pb::SchoolTerm> {
        let urn = Urn::parse(&self.school).map_err(anyhow::Error::msg)?;
        let term = Term::parse(&self.year, &self.term).map_err(anyhow::Error::msg)?;
        Ok(crate::api::school_term_pb(urn, term))
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelClient {
    /// Train from the server's history (progress is shown), then print the new model's card.
    Train {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value_t = 36)]
        capacity: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// List models; the active one is marked.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a model's card.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        model_id: String,
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
}

#[derive(Debug, Subcommand)]
pub enum CohortClient {
    /// Propose a cohort from the active model's scores.
    Propose {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        at: SchoolTermArgs,
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
    /// Show the cohort with each child's reasons and decision.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        at: SchoolTermArgs,
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

#[derive(Debug, Subcommand)]
pub enum AuditClient {
    /// List audit events (oldest first).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "")]
        action: String,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Verify the audit chain: every hash and its authentication, the head file, a
    /// checkpoint if given, and that the current state is explained by the chain. Exits 1
    /// naming the first problem. With --data-dir it works offline, without a server.
    Verify {
        #[command(flatten)]
        at: AuditAt,
        /// A checkpoint file written earlier by `riskid audit checkpoint`.
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
    },
    /// Print an authenticated checkpoint of the chain's head (JSON) to keep outside the
    /// server; `verify --checkpoint FILE` later proves nothing before it was cut or rewritten.
    Checkpoint {
        #[command(flatten)]
        at: AuditAt,
    },
}

/// Where the audit chain is: a running server, or (offline) a data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditAt {
    /// Work on this data directory directly (offline), instead of a server.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// The audit key, for --data-dir (default: audit.key in the data directory).
    #[arg(long, env = "RISKID_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<std::path::PathBuf>,
    /// Server address (without --data-dir).
    #[arg(long, env = "RISKID_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// API key of an admin or analyst (without --data-dir).
    #[arg(long, env = "RISKID_KEY", hide_env_values = true)]
    pub key: Option<String>,
    #[arg(long, env = "RISKID_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl AuditAt {
    /// The data directory's store, opened without the start-up anchor check: verify
    /// reports what it finds instead of refusing to open.
    fn store(&self) -> anyhow::Result<Option<crate::storage::Store>> {
        let Some(dir) = &self.data_dir else { return Ok(None) };
        if !dir.join(crate::storage::DB_FILE).exists() {
            anyhow::bail!("no riskid database in {}", dir.display());
        }
        Ok(Some(crate::storage::Store::open_unchecked(dir, self.audit_key_file.as_deref())?))
    }

    fn client(&self) -> anyhow::Result<ClientArgs> {
        let key = self
            .key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("give --key (or RISKID_KEY) to use a server, or --data-dir"))?;
        Ok(ClientArgs { server: self.server.clone(), key, tls_ca: self.tls_ca.clone() })
    }
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", s.code().description(), crate::client::safe(s.message()))
}

fn band(b: i32) -> &'static str {
    match pb::Band::try_from(b) {
        Ok(pb::Band::High) => "HIGH",
        Ok(pb::Band::Medium) => "medium",
        _ => "low",
    }
}

fn print_risk_line(prefix: &str, r: &pb::PupilRisk) {
    let p: Vec<String> =
        r.outcomes.iter().map(|o| format!("{:>3.0}% {:<6}", 100.0 * o.probability, band(o.band))).collect();
    crate::out!(
        "{prefix}{}  Y{:<3} any {:>3.0}%  PA {}  susp {}  MH {}",
        r.upn,
        r.ncyear,
        100.0 * r.any_adverse,
        p[0],
        p[1],
        p[2]
    );
    let pad = " ".repeat(prefix.chars().count() + 4);
    if let Some(top) = r.outcomes.iter().max_by(|a, b| a.probability.total_cmp(&b.probability)) {
        for reason in &top.reasons {
            crate::out!("{pad}{:<11} {}", reason.domain, reason.text);
        }
    }
    for f in &r.flags {
        crate::out!("{pad}(note: {f})");
    }
}

pub async fn risks(client: ClientArgs, at: SchoolTermArgs, limit: i32) -> anyhow::Result<i32> {
    let (ch, bearer) = connect(&client).await?;
    let mut c = RiskServiceClient::with_interceptor(ch, bearer);
    let r = c
        .list_school_risks(pb::ListSchoolRisksRequest {
            school_term: Some(at.pb()?),
            page_size: limit,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    crate::out!(
        "model {}; highest risk first (next term: persistent absence, suspension, mental-health referral)",
        r.model_id
    );
    for (i, risk) in r.risks.iter().enumerate() {
        print_risk_line(&format!("{:>4}. ", i + 1), risk);
    }
    Ok(0)
}

pub async fn model(cmd: ModelClient) -> anyhow::Result<i32> {
    let client = match &cmd {
        ModelClient::Train { client, .. }
        | ModelClient::List { client }
        | ModelClient::Show { client, .. }
        | ModelClient::Activate { client, .. } => client.clone(),
    };
    let (ch, bearer) = connect(&client).await?;
    let mut c = ModelServiceClient::with_interceptor(ch, bearer);
    match cmd {
        ModelClient::Train { capacity, seed, .. } => {
            let mut s = c
                .train_model(pb::TrainModelRequest { capacity, seed, ..Default::default() })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(m) = s.next().await {
                match m.map_err(status)?.event {
                    Some(pb::train_model_progress::Event::Message(m)) => eprintln!("  {m}"),
                    Some(pb::train_model_progress::Event::Model(m)) => {
                        crate::out!("{}", m.card);
                        crate::out!("model id: {} (beats baselines: {})", m.model_id, m.beats_baselines);
                    }
                    None => {}
                }
            }
        }
        ModelClient::List { .. } => {
            for m in c.list_models(pb::ListModelsRequest::default()).await.map_err(status)?.into_inner().models {
                crate::out!(
                    "{} {:<40} created {}  beats baselines: {}",
                    if m.active { "*" } else { " " },
                    m.model_id,
                    crate::app::rfc3339(m.create_time.map_or(0, |t| t.seconds)),
                    m.beats_baselines
                );
            }
        }
        ModelClient::Show { model_id, .. } => {
            crate::out!(
                "{}",
                c.get_model(pb::GetModelRequest { model_id, view: pb::ModelView::Full as i32 })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .card
            );
        }
        ModelClient::Activate { model_id, force, reason, .. } => {
            let r = c
                .activate_model(pb::ActivateModelRequest { model_id, force, reason, request_id: String::new() })
                .await
                .map_err(status)?
                .into_inner();
            crate::out!("activated; rescored {} pupils in {} schools", r.pupils_rescored, r.schools_rescored);
        }
    }
    Ok(0)
}

fn print_cohort(c: &pb::Cohort) {
    let state = pb::CohortState::try_from(c.state).map(|s| s.as_str_name().to_ascii_lowercase()).unwrap_or_default();
    crate::out!(
        "cohort {} ({state}), model {}, capacity {}, {} eligible ({} statutory, {} in a programme, {} outside the years excluded)",
        c.cohort_id,
        c.model_id,
        c.capacity,
        c.eligible,
        c.excluded_statutory,
        c.excluded_in_programme,
        c.excluded_year_group
    );
    for m in &c.members {
        let d =
            pb::DecisionKind::try_from(m.decision).map(|d| d.as_str_name().to_ascii_lowercase()).unwrap_or_default();
        let d = if d == "decision_kind_unspecified" { "undecided".to_string() } else { d };
        let why = if m.reason_code.is_empty() { String::new() } else { format!(" ({}: {})", m.reason_code, m.note) };
        crate::out!("  #{:<3} {d}{why}", if m.proposed { m.rank.to_string() } else { "+".into() });
        if let Some(r) = &m.risk {
            print_risk_line("       ", r);
        }
    }
}

pub async fn cohort(cmd: CohortClient) -> anyhow::Result<i32> {
    use CohortClient::*;
    let client = match &cmd {
        Propose { client, .. }
        | Show { client, .. }
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
        Show { at, .. } => {
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
                None => Err(tonic::Status::not_found("no cohort for that school and term")),
            }
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
    print_cohort(&cohort.map_err(status)?.into_inner());
    Ok(0)
}

pub async fn audit(cmd: AuditClient) -> anyhow::Result<i32> {
    let client = match &cmd {
        AuditClient::List { client, .. } => client.clone(),
        AuditClient::Verify { at, checkpoint } => return verify(at, checkpoint.as_deref()).await,
        AuditClient::Checkpoint { at } => return checkpoint(at).await,
    };
    let (ch, bearer) = connect(&client).await?;
    let mut c = AuditServiceClient::with_interceptor(ch, bearer);
    match cmd {
        AuditClient::List { action, limit, .. } => {
            let r = c
                .list_audit_events(pb::ListAuditEventsRequest { action, page_size: limit, ..Default::default() })
                .await
                .map_err(status)?
                .into_inner();
            for e in r.events {
                crate::out!(
                    "{:>5}  {}  key {:<3} {:<12} {:<22} {:<7} {}",
                    e.seq,
                    crate::app::rfc3339(e.event_time.map_or(0, |t| t.seconds)),
                    e.actor_key_id,
                    pb::Role::try_from(e.actor_role).map_or("?", |r| r.as_str_name()),
                    e.action,
                    e.school_urn,
                    e.subject
                );
            }
            Ok(0)
        }
        AuditClient::Verify { .. } | AuditClient::Checkpoint { .. } => unreachable!("handled above"),
    }
}

async fn verify(at: &AuditAt, checkpoint: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let cp: Option<crate::audit::Checkpoint> = match checkpoint {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not a checkpoint: {e}", p.display()))?)
        }
        None => None,
    };
    let (events, problem) = match at.store()? {
        Some(store) => {
            let v = crate::app::verify_store(&store, cp.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
            (v.events, v.problem.map(|b| (b.seq, b.problem)))
        }
        None => {
            let (ch, bearer) = connect(&at.client()?).await?;
            let mut c = AuditServiceClient::with_interceptor(ch, bearer);
            let checkpoint = cp.map(|c| pb::AuditCheckpoint { seq: c.seq, hash: c.hash, mac: c.mac });
            let r =
                c.verify_audit_chain(pb::VerifyAuditChainRequest { checkpoint }).await.map_err(status)?.into_inner();
            (r.events_checked, (!r.ok).then_some((r.first_broken_seq, r.problem)))
        }
    };
    match problem {
        None => {
            crate::out!("audit chain verified: {events} events; the state is explained by the chain");
            Ok(0)
        }
        Some((0, problem)) => {
            crate::out!("AUDIT CHECK FAILED: {problem}");
            Ok(1)
        }
        Some((seq, problem)) => {
            crate::out!("AUDIT CHAIN BROKEN at event {seq}: {problem}");
            Ok(1)
        }
    }
}

async fn checkpoint(at: &AuditAt) -> anyhow::Result<i32> {
    let cp = match at.store()? {
        Some(store) => store.checkpoint()?.ok_or_else(|| anyhow::anyhow!("the audit chain is empty"))?,
        None => {
            let (ch, bearer) = connect(&at.client()?).await?;
            let mut c = AuditServiceClient::with_interceptor(ch, bearer);
            let r = c.get_audit_checkpoint(pb::GetAuditCheckpointRequest {}).await.map_err(status)?.into_inner();
            crate::audit::Checkpoint { seq: r.seq, hash: r.hash, mac: r.mac }
        }
    };
    crate::out!("{}", serde_json::to_string(&cp)?);
    Ok(0)
}

pub async fn overrides(client: ClientArgs) -> anyhow::Result<i32> {
    let (ch, bearer) = connect(&client).await?;
    let mut c = AuditServiceClient::with_interceptor(ch, bearer);
    let r = c.get_override_report(pb::GetOverrideReportRequest {}).await.map_err(status)?.into_inner();
    crate::out!(
        "{:<16} {:<36} {:>8} {:>9} {:>7} {:>5} {:>9}",
        "dimension",
        "value",
        "proposed",
        "confirmed",
        "removed",
        "added",
        "override"
    );
    for row in r.rows {
        crate::out!(
            "{:<16} {:<36} {:>8} {:>9} {:>7} {:>5} {:>8.0}%",
            row.dimension,
            row.value,
            row.proposed,
            row.confirmed,
            row.removed,
            row.added,
            100.0 * row.override_rate
        );
    }
    Ok(0)
}
