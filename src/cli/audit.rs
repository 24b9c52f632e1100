//! `riskid audit` (the trail, its verification and checkpoints) and `riskid report`.

use clap::Subcommand;

use super::enum_word;
use super::exit::{Exit, fail, status};
use super::output::{Cell, OutputArgs, Table};
use crate::api::pb::{self, audit_service_client::AuditServiceClient};
use crate::client::{Authed, ClientArgs, connect};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, oldest first (pages are fetched to the limit).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this action, e.g. decision.confirm.
        #[arg(long, default_value = "")]
        action: String,
        /// How many events; 0 for all.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Verify the audit chain: every hash and its authentication, the head file, a
    /// checkpoint if given, and that the current state is explained by the chain. Exits 7
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

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Confirm/remove/add rates by school, reason, model and group.
    Overrides {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Programme outcomes: how supported children did each term after selection, against a
    /// matched comparison group (difference in differences, 95% interval), and the naive
    /// before/after beside it. Counts under 5 are not shown, nor figures that would reveal them.
    /// Analysts and admins: every school and the borough; schools and link workers: their own.
    Outcomes {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this school's cohorts.
        #[arg(long)]
        school: Option<String>,
        /// Only this many terms after selection (1 = the next term); 0 = all.
        #[arg(long, default_value_t = 0)]
        terms: u32,
        #[command(flatten)]
        out: OutputArgs,
    },
}

fn published_count(c: &Option<pb::PublishedCount>) -> Cell {
    let c = c.unwrap_or_default();
    match pb::CountState::try_from(c.state).unwrap_or(pb::CountState::Unspecified) {
        pb::CountState::Rounded => Cell::Int(i64::from(c.value)),
        pb::CountState::FewerThanFive => Cell::Text("fewer than 5".into()),
        pb::CountState::AllButFewerThanFive => Cell::Text("all but fewer than 5".into()),
        pb::CountState::Unspecified => Cell::Empty,
    }
}

fn published_value(v: &Option<pb::PublishedValue>, signed: bool) -> Cell {
    let v = v.unwrap_or_default();
    match pb::ValueState::try_from(v.state).unwrap_or(pb::ValueState::Unspecified) {
        pb::ValueState::Shown if signed => Cell::Num(v.value),
        pb::ValueState::Shown => Cell::Prob(v.value),
        pb::ValueState::Suppressed => Cell::Text("suppressed".into()),
        pb::ValueState::NotAvailable | pb::ValueState::Unspecified => Cell::Empty,
    }
}

async fn outcomes(cl: ClientArgs, school: Option<String>, terms: u32, out: OutputArgs) -> anyhow::Result<i32> {
    let (ch, bearer) = connect(&cl).await?;
    let mut c = pb::outcome_service_client::OutcomeServiceClient::with_interceptor(ch, bearer);
    let r = c
        .get_programme_outcomes(pb::GetProgrammeOutcomesRequest { school_urn: school.unwrap_or_default() })
        .await
        .map_err(status)?
        .into_inner();
    let mut t = Table::new(&[
        "school",
        "terms_after",
        "measure",
        "supported",
        "seen",
        "not_seen",
        "supported_rate",
        "pairs",
        "pairs_supported_rate",
        "comparison_rate",
        "difference",
        "ci_low",
        "ci_high",
        "naive_n",
        "naive_before",
        "naive_after",
        "naive_change",
    ]);
    for f in r.figures.iter().filter(|f| terms == 0 || f.terms_after_selection <= terms) {
        let measure = pb::ProgrammeMeasure::try_from(f.measure)
            .map(|m| enum_word(m.as_str_name(), "PROGRAMME_MEASURE_"))
            .unwrap_or_default();
        t.push(vec![
            if f.school_urn.is_empty() { "all".to_string() } else { f.school_urn.clone() }.into(),
            i64::from(f.terms_after_selection).into(),
            measure.into(),
            published_count(&f.supported),
            published_count(&f.seen),
            published_count(&f.not_seen),
            published_value(&f.supported_rate, false),
            published_count(&f.pairs),
            published_value(&f.pairs_supported_rate, false),
            published_value(&f.comparison_rate, false),
            published_value(&f.difference, true),
            published_value(&f.interval_low, true),
            published_value(&f.interval_high, true),
            published_count(&f.naive_n),
            published_value(&f.naive_before, false),
            published_value(&f.naive_after, false),
            published_value(&f.naive_change, true),
        ]);
    }
    if out.output == super::output::Format::Text {
        let words = |c: &Option<pb::PublishedCount>| match published_count(c) {
            Cell::Int(n) => n.to_string(),
            Cell::Text(s) => s,
            _ => "?".into(),
        };
        crate::out!(
            "Programme outcomes: {} finalised cohort(s), {} supported children, {} matched, {} without a match.",
            words(&r.cohorts),
            words(&r.supported),
            words(&r.matched),
            words(&r.unmatched)
        );
        crate::out!("difference = supported children's change since selection minus their comparison children's;");
        crate::out!("naive = the supported children's before/after alone: NOT an effect (regression to the mean).\n");
    }
    t.print(out.output)?;
    if out.output == super::output::Format::Text {
        crate::out!("\nMethod: {}", r.method);
        crate::out!("What this design cannot rule out:");
        for c in &r.caveats {
            crate::out!("  - {c}");
        }
    }
    Ok(0)
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
            return Err(fail(Exit::NotFound, format!("no riskid database in {}", dir.display())));
        }
        Ok(Some(crate::storage::Store::open_unchecked(dir, self.audit_key_file.as_deref())?))
    }

    fn client(&self) -> anyhow::Result<ClientArgs> {
        let key = self
            .key
            .clone()
            .ok_or_else(|| fail(Exit::Usage, "give --key (or RISKID_KEY) to use a server, or --data-dir"))?;
        Ok(ClientArgs { server: self.server.clone(), key, tls_ca: self.tls_ca.clone() })
    }
}

async fn client(c: &ClientArgs) -> anyhow::Result<AuditServiceClient<Authed>> {
    let (ch, bearer) = connect(c).await?;
    Ok(AuditServiceClient::with_interceptor(ch, bearer))
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::List { client: cl, action, limit, out } => {
            let mut c = client(&cl).await?;
            let want = if limit == 0 { usize::MAX } else { limit };
            let action = match action.as_str() {
                "" => 0,
                a => crate::api::action_to_pb(crate::audit::Action::parse(a).ok_or_else(|| {
                    fail(Exit::Usage, format!("{a:?} is not an audit action (e.g. decision.confirm)"))
                })?) as i32,
            };
            let mut t = Table::new(&["seq", "time", "key", "role", "action", "school", "subject", "hash"]);
            let mut token = String::new();
            loop {
                let page = c
                    .list_audit_events(pb::ListAuditEventsRequest {
                        action,
                        page_size: (want - t.len()).min(500) as i32,
                        page_token: token,
                        ..Default::default()
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                for e in &page.events {
                    t.push(vec![
                        e.seq.into(),
                        crate::app::rfc3339(e.event_time.map_or(0, |t| t.seconds)).into(),
                        Cell::Int(e.actor_key_id),
                        pb::Role::try_from(e.actor_role)
                            .map(|r| enum_word(r.as_str_name(), "ROLE_"))
                            .unwrap_or_default()
                            .into(),
                        crate::api::action_from_pb(e.action).map_or("?", |a| a.as_str()).into(),
                        e.school_urn.clone().into(),
                        e.subject.clone().into(),
                        e.hash.clone().into(),
                    ]);
                }
                if page.next_page_token.is_empty() || t.len() >= want {
                    break;
                }
                token = page.next_page_token;
            }
            t.print(out.output)?;
            Ok(0)
        }
        AuditCommand::Verify { at, checkpoint } => verify(&at, checkpoint.as_deref()).await,
        AuditCommand::Checkpoint { at } => checkpoint(&at).await,
    }
}

async fn verify(at: &AuditAt, checkpoint: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let cp: Option<crate::audit::Checkpoint> = match checkpoint {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| fail(Exit::Usage, format!("cannot read {}: {e}", p.display())))?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| fail(Exit::Usage, format!("{} is not a checkpoint: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let (events, problem) = match at.store()? {
        Some(store) => {
            let v = crate::app::verify_store(&store, cp.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
            (v.events, v.problem.map(|b| (b.seq, b.problem)))
        }
        None => {
            let mut c = client(&at.client()?).await?;
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
            Ok(Exit::AuditFailed as i32)
        }
        Some((seq, problem)) => {
            crate::out!("AUDIT CHAIN BROKEN at event {seq}: {problem}");
            Ok(Exit::AuditFailed as i32)
        }
    }
}

async fn checkpoint(at: &AuditAt) -> anyhow::Result<i32> {
    let cp = match at.store()? {
        Some(store) => store.checkpoint()?.ok_or_else(|| fail(Exit::NotFound, "the audit chain is empty"))?,
        None => {
            let mut c = client(&at.client()?).await?;
            let r = c.get_audit_checkpoint(pb::GetAuditCheckpointRequest {}).await.map_err(status)?.into_inner();
            crate::audit::Checkpoint { seq: r.seq, hash: r.hash, mac: r.mac }
        }
    };
    crate::out!("{}", serde_json::to_string(&cp)?);
    Ok(0)
}

pub async fn report(cmd: ReportCommand) -> anyhow::Result<i32> {
    let (cl, out) = match cmd {
        ReportCommand::Overrides { client, out } => (client, out),
        ReportCommand::Outcomes { client, school, terms, out } => return outcomes(client, school, terms, out).await,
    };
    let mut c = client(&cl).await?;
    let r = c.get_override_report(pb::GetOverrideReportRequest {}).await.map_err(status)?.into_inner();
    let mut t = Table::new(&["dimension", "value", "proposed", "confirmed", "removed", "added", "override_rate"]);
    for row in r.rows {
        t.push(vec![
            row.dimension.into(),
            row.value.into(),
            row.proposed.into(),
            row.confirmed.into(),
            row.removed.into(),
            row.added.into(),
            Cell::Prob(row.override_rate),
        ]);
    }
    t.print(out.output)?;
    Ok(0)
}
