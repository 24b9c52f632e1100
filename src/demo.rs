//! `riskid demo`: the whole mission on a synthetic borough, through the real gRPC API.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::StreamExt;

use crate::api::pb::{
    self, audit_service_client::AuditServiceClient, cohort_service_client::CohortServiceClient,
    feed_service_client::FeedServiceClient, model_service_client::ModelServiceClient,
    risk_service_client::RiskServiceClient, train_model_progress::Event,
};
use crate::app::{App, Limits};
use crate::auth::{Role, generate_key};
use crate::client::{Authed, Bearer, submission_stream};
use crate::domain::{Term, Urn};
use crate::model::ModelArtifact;
use crate::storage::{NewKey, Store, now_unix};
use crate::synth::{WorldConfig, generate};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub schools: usize,
    pub years: usize,
    pub seed: u64,
    pub capacity: u32,
    /// Keep the data directory here instead of a temporary one.
    pub keep: Option<PathBuf>,
    /// Schools send DfE Common Transfer Files with a supplement instead of the contract CSV.
    pub ctf: bool,
    /// After the demo, keep serving, with the web app at this address: the last school's
    /// cohort is left proposed, for a newcomer to review in the browser.
    pub serve: Option<std::net::SocketAddr>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { schools: 7, years: 3, seed: 42, capacity: 36, keep: None, ctf: false, serve: None }
    }
}

/// What the demo did, for tests and the summary.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    pub feeds_submitted: usize,
    pub rows_submitted: usize,
    pub trained_model: String,
    pub activated: bool,
    pub active_model: String,
    /// Per school: (URN, proposed, final list size).
    pub cohorts: Vec<(String, usize, usize)>,
    pub removed: usize,
    pub added: usize,
    pub audit_events: u64,
    pub audit_ok: bool,
}

fn key(store: &Store, role: Role, schools: &[Urn], label: &str) -> anyhow::Result<Bearer> {
    raw_key(store, role, schools, label).map(|k| Bearer::new(&k))
}

fn raw_key(store: &Store, role: Role, schools: &[Urn], label: &str) -> anyhow::Result<String> {
    let (k, hash, prefix) = generate_key();
    let schools: BTreeSet<Urn> = schools.iter().copied().collect();
    store.create_key(
        &NewKey { key_hash: &hash, prefix: &prefix, role, schools: &schools, label, created_at: now_unix() },
        "operator:test",
    )?;
    Ok(k)
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// Runs the demo, writing progress and the summary to `out`.
pub async fn run(opts: DemoOptions, out: &mut (dyn Write + Send)) -> anyhow::Result<DemoSummary> {
    run_until(opts, out, std::future::ready(())).await
}

/// As [`run`]; with `opts.serve`, keeps the servers up after the summary until `stop`.
pub async fn run_until(
    opts: DemoOptions,
    out: &mut (dyn Write + Send),
    stop_serving: impl std::future::Future<Output = ()>,
) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let data_dir = opts.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut s = DemoSummary::default();
    macro_rules! say { ($($t:tt)*) => {{ writeln!(out, $($t)*)?; out.flush()?; }} }

    say!(
        "riskid demo: a synthetic borough of {} schools over {} years (no real children's data)",
        opts.schools,
        opts.years
    );
    let world =
        generate(&WorldConfig { schools: opts.schools, years: opts.years, seed: opts.seed, ..Default::default() })
            .map_err(anyhow::Error::msg)?;
    let store = Arc::new(Store::open(&data_dir)?);
    let urns: Vec<Urn> = world.schools.iter().map(|s| s.urn).collect();
    let analyst = key(&store, Role::Analyst, &[], "demo analyst")?;
    let link_worker = key(&store, Role::LinkWorker, &urns, "demo link worker")?;
    let app = Arc::new(App::new(store.clone(), Limits::default())?);
    let web_app = app.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::serve(listener, app, None, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    say!("[1/6] server listening on {addr}, data in {}", data_dir.display());

    // Each school submits every term's feed with its own key, in term order.
    let mut school_keys = Vec::new();
    for sch in &world.schools {
        school_keys.push(key(&store, Role::School, &[sch.urn], &sch.name)?);
    }
    let ctf_files = if opts.ctf { crate::synth::world_ctf(&world) } else { Vec::new() };
    for (i, term) in world.terms.iter().enumerate() {
        for (n, f) in world.feeds.iter().enumerate().filter(|(_, f)| f.term == *term) {
            let k = urns.iter().position(|u| *u == f.urn).expect("school of the world");
            let mut c: FeedServiceClient<Authed> =
                FeedServiceClient::with_interceptor(channel.clone(), school_keys[k].clone());
            let school_term = Some(crate::api::school_term_pb(f.urn, f.term));
            if let Some((xml, supp)) = ctf_files.get(n) {
                let header = pb::SubmissionHeader {
                    school_term,
                    content_length: (xml.len() + supp.len()) as u64,
                    format: pb::FeedFormat::Ctf as i32,
                    ..Default::default()
                };
                c.submit_feed(crate::client::ctf_stream(header, xml.clone(), supp.clone())).await?;
            } else {
                let csv = crate::synth::feed_csv(&f.rows);
                let header =
                    pb::SubmissionHeader { school_term, content_length: csv.len() as u64, ..Default::default() };
                c.submit_feed(submission_stream(header, csv)).await?;
            }
            s.feeds_submitted += 1;
            s.rows_submitted += f.rows.len();
        }
        let what = if opts.ctf { "Common Transfer Files" } else { "feeds" };
        say!(
            "[2/6] submitted {what} for {} ({}/{} terms, {} rows so far)",
            term,
            i + 1,
            world.terms.len(),
            s.rows_submitted
        );
    }

    // Train on everything submitted, then activate only if the model beats the baselines.
    let mut models = ModelServiceClient::with_interceptor(channel.clone(), analyst.clone());
    let mut progress = models
        .train_model(pb::TrainModelRequest { capacity: opts.capacity, seed: opts.seed, ..Default::default() })
        .await?
        .into_inner();
    let mut trained = None;
    while let Some(msg) = progress.next().await {
        match msg?.event {
            Some(Event::Message(m)) => say!("[3/6] training: {m}"),
            Some(Event::Model(m)) => trained = Some(m),
            None => {}
        }
    }
    let trained = trained.ok_or_else(|| anyhow::anyhow!("training ended without a model"))?;
    s.trained_model = trained.model_id.clone();
    let full = models
        .get_model(pb::GetModelRequest { model_id: trained.model_id.clone(), view: pb::ModelView::Full as i32 })
        .await?
        .into_inner();
    let artifact = ModelArtifact::from_json(std::str::from_utf8(&full.artifact)?).map_err(anyhow::Error::msg)?;
    if trained.beats_baselines {
        let r = models
            .activate_model(pb::ActivateModelRequest { model_id: trained.model_id.clone(), ..Default::default() })
            .await?
            .into_inner();
        s.activated = true;
        say!(
            "[4/6] activated {}; rescored {} pupils in {} schools",
            trained.model_id,
            r.pupils_rescored,
            r.schools_rescored
        );
    } else {
        say!("[4/6] {} does not beat the baselines at capacity: kept the active model", trained.model_id);
    }
    let active = models.list_models(pb::ListModelsRequest::default()).await?.into_inner();
    s.active_model = active.models.iter().find(|m| m.active).map(|m| m.model_id.clone()).unwrap_or_default();

    // Link workers: propose, review and finalise each school's cohort for the latest term.
    let latest: Term = *world.terms.last().expect("at least one term");
    let mut cohorts = CohortServiceClient::with_interceptor(channel.clone(), link_worker.clone());
    let mut risks = RiskServiceClient::with_interceptor(channel.clone(), link_worker.clone());
    let mut summaries = Vec::new();
    for (n, &urn) in urns.iter().enumerate() {
        let st = crate::api::school_term_pb(urn, latest);
        let proposed = cohorts
            .propose_cohort(pb::ProposeCohortRequest {
                school_term: Some(st.clone()),
                capacity: opts.capacity,
                seed: opts.seed,
                ..Default::default()
            })
            .await?
            .into_inner();
        let members = proposed.members.clone();
        if opts.serve.is_some() && n + 1 == urns.len() {
            say!("[5/6] school {urn}: proposed {} children, left for you to review in the browser", members.len());
            continue;
        }
        let decide = |upn: &str, kind: pb::DecisionKind, reason: &str, note: &str| pb::RecordDecisionRequest {
            cohort_id: proposed.cohort_id.clone(),
            upn: upn.into(),
            decision: kind as i32,
            reason_code: reason.into(),
            note: note.into(),
            request_id: format!("demo-{}-{upn}-{}", proposed.cohort_id, kind as i32),
        };
        // Play a link worker: remove one child already supported elsewhere (and, in every other
        // school, one whose family declined); confirm the rest; add one child the model missed.
        let (mut removed, mut added) = (0, 0);
        for (i, m) in members.iter().enumerate() {
            let d = match i {
                2 => decide(
                    &m.upn,
                    pb::DecisionKind::Remove,
                    "already_supported",
                    "has a mentor through the local youth service",
                ),
                5 if n % 2 == 0 => {
                    decide(&m.upn, pb::DecisionKind::Remove, "family_declined", "family prefers not to take part")
                }
                _ => decide(&m.upn, pb::DecisionKind::Confirm, "", ""),
            };
            let kind = d.decision;
            cohorts.record_decision(d).await?;
            removed += usize::from(kind == pb::DecisionKind::Remove as i32);
        }
        let ranked = risks
            .list_school_risks(pb::ListSchoolRisksRequest {
                school_term: Some(st.clone()),
                page_size: 200,
                ..Default::default()
            })
            .await?
            .into_inner();
        let in_cohort: BTreeSet<&str> = members.iter().map(|m| m.upn.as_str()).collect();
        if let Some(extra) = ranked.risks.iter().find(|r| !in_cohort.contains(r.upn.as_str()) && !r.statutory) {
            let d = decide(
                &extra.upn,
                pb::DecisionKind::Add,
                "school_concern",
                "class teacher has raised concerns at home",
            );
            match cohorts.record_decision(d).await {
                Ok(_) => added += 1,
                Err(e) => say!("      could not add a child: {}", e.message()),
            }
        }
        let over = if members.len() - removed + added > opts.capacity as usize {
            "one extra place agreed with the school"
        } else {
            ""
        };
        let fin = cohorts
            .finalise_cohort(pb::FinaliseCohortRequest {
                cohort_id: proposed.cohort_id.clone(),
                over_capacity_reason: over.into(),
                request_id: format!("demo-finalise-{}", proposed.cohort_id),
            })
            .await?
            .into_inner();
        let final_n = fin.members.iter().filter(|m| m.decision != pb::DecisionKind::Remove as i32).count();
        say!("[5/6] school {urn}: proposed {}, removed {removed}, added {added}, finalised {final_n}", members.len());
        s.cohorts.push((urn.to_string(), members.len(), final_n));
        s.removed += removed;
        s.added += added;
        summaries.push(fin);
    }

    let mut audit = AuditServiceClient::with_interceptor(channel.clone(), analyst.clone());
    let verified = audit.verify_audit_chain(pb::VerifyAuditChainRequest::default()).await?.into_inner();
    let report = audit.get_override_report(pb::GetOverrideReportRequest {}).await?.into_inner();
    (s.audit_ok, s.audit_events) = (verified.ok, verified.events_checked);

    say!("[6/6] done in {:.1} s\n", started.elapsed().as_secs_f64());
    say!("== Cohorts for {latest} (capacity {} per school) ==", opts.capacity);
    for c in &summaries {
        let st = c.school_term.clone().unwrap_or_default();
        let kept: Vec<&pb::CohortMember> =
            c.members.iter().filter(|m| m.decision != pb::DecisionKind::Remove as i32).collect();
        say!("school {}: {} children ({} eligible); highest priority:", st.school_urn, kept.len(), c.eligible);
        for m in kept.iter().take(3) {
            let Some(r) = &m.risk else { continue };
            let top = r.outcomes.iter().max_by(|a, b| a.probability.total_cmp(&b.probability));
            let reasons: Vec<String> =
                top.map(|o| o.reasons.iter().take(2).map(|x| x.text.clone()).collect()).unwrap_or_default();
            say!(
                "  #{:<2} Year {:<2} chance of at least one adverse outcome {} — {}",
                m.rank,
                r.ncyear,
                pct(r.any_adverse),
                reasons.join("; ")
            );
        }
    }
    say!("\n== Model {} ({}) ==", artifact.model_id, if s.activated { "activated" } else { "not activated" });
    say!("{:<26} {:>7} {:>9} {:>7} {:>11} {:>11}", "outcome", "AUC", "last-term", "DfE", "prec@cap", "ECE");
    for o in &artifact.outcomes {
        let e = &o.evaluation;
        say!(
            "{:<26} {:>7.3} {:>9.3} {:>7.3} {:>5.3}/{:<5.3} {:>11.4}",
            o.outcome.label(),
            e.model.auc.unwrap_or(f64::NAN),
            e.last_term_status.auc.unwrap_or(f64::NAN),
            e.dfe_absence_rule.auc.unwrap_or(f64::NAN),
            e.model.precision_at_capacity,
            e.last_term_status.precision_at_capacity.max(e.dfe_absence_rule.precision_at_capacity),
            e.model.ece.unwrap_or(f64::NAN)
        );
    }
    say!("(prec@cap: model / best baseline; tested on {} with a fit on earlier terms)", artifact.training.test_term);
    let flags: Vec<&String> = artifact.outcomes.iter().flat_map(|o| &o.evaluation.fairness.flags).collect();
    say!("\n== Fairness flags at capacity: {} ==", flags.len());
    for f in flags.iter().take(6) {
        say!("  - {f}");
    }
    say!("\n== Overrides by link workers ==");
    for r in report.rows.iter().filter(|r| r.dimension == "model" || r.dimension == "reason" || r.dimension == "fsm") {
        say!(
            "  {:<16} {:<40} proposed {:>4}  confirmed {:>4}  removed {:>3}  added {:>3}  override rate {}",
            r.dimension,
            r.value,
            r.proposed,
            r.confirmed,
            r.removed,
            r.added,
            pct(r.override_rate)
        );
    }
    say!(
        "\n== Audit chain: {} ({} events) ==",
        if verified.ok { "verified" } else { "BROKEN" },
        verified.events_checked
    );
    if let Some(dir) = &opts.keep {
        say!(
            "\nData kept in {}. Serve it with:\n  riskid serve --data-dir {}\nthen create a key (riskid keys create --role analyst --data-dir {}) and query it, e.g.\n  RISKID_KEY=<key> riskid risks --school {} --year {} --term {}",
            dir.display(),
            dir.display(),
            dir.display(),
            urns[0],
            latest.academic_year(),
            latest.name().as_str()
        );
    }
    if let Some(web_addr) = opts.serve {
        let settings = crate::server::Settings::for_data_dir(data_dir.clone());
        let bound = match crate::server::spawn_web(web_addr, web_app.clone(), &settings).await {
            Ok(a) => a,
            // The usual port is taken: any free one will do.
            Err(_) => crate::server::spawn_web("127.0.0.1:0".parse()?, web_app, &settings).await?,
        };
        let school = raw_key(&store, Role::School, &urns[..1], "demo school data manager")?;
        let worker = raw_key(&store, Role::LinkWorker, &urns, "demo link worker (browser)")?;
        let analyst_key = raw_key(&store, Role::Analyst, &[], "demo analyst (browser)")?;
        let admin = raw_key(&store, Role::Admin, &[], "demo administrator")?;
        say!("\n== Serving: open http://{bound}/ in a browser ==");
        say!("gRPC on {addr}. Sign in with one of these keys (made for this demo only):");
        say!("  link worker:          {worker}");
        say!("  school data manager:  {school}   (school {})", urns[0]);
        say!("  analyst:              {analyst_key}");
        say!("  administrator:        {admin}");
        say!("School {}'s cohort is waiting for review. Press Ctrl-C to stop.", urns[urns.len() - 1]);
        stop_serving.await;
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(s)
}
