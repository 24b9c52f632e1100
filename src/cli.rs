//! The command line: one binary for the server, key management and client commands.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::pb;
use crate::auth::{Role, generate_key};
use crate::client::{self, ClientArgs};
use crate::domain::{Term, Urn};
use crate::server::{self, Settings};
use crate::storage::{NewKey, Store, now_unix};

#[derive(Debug, Parser)]
#[command(name = "riskid", version, about = "Next-term risk scores and link-worker cohorts from termly school data")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "RISKID_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole mission on a synthetic borough: server, feeds, training, cohorts, review.
    Demo {
        /// Schools in the synthetic borough (Leigh has 7).
        #[arg(long, default_value_t = 7)]
        schools: usize,
        /// Academic years of feeds.
        #[arg(long, default_value_t = 3)]
        years: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Cohort capacity per school.
        #[arg(long, default_value_t = 36)]
        capacity: u32,
        /// Keep the data directory here (default: a temporary directory, removed at the end).
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Run the gRPC server.
    Serve(Settings),
    /// Manage API keys directly in a data directory (works while the server runs).
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
        /// Data directory holding the database.
        #[arg(long, env = "RISKID_DATA_DIR", default_value = "./riskid-data", global = true)]
        data_dir: PathBuf,
    },
    /// Submit a termly feed CSV for one school and term, and print the report.
    Submit {
        #[command(flatten)]
        client: ClientArgs,
        /// School URN (6 digits).
        #[arg(long)]
        school: String,
        /// Academic year, e.g. 2025/26.
        #[arg(long)]
        year: String,
        /// autumn, spring or summer.
        #[arg(long)]
        term: String,
        /// Validate and report only; store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Optional idempotency key: a repeat returns the first result.
        #[arg(long)]
        request_id: Option<String>,
        /// The CSV file.
        file: PathBuf,
    },
    /// Generate a synthetic borough's termly feeds (one CSV per school per term + manifest.json).
    Generate {
        /// Number of schools (about one in six is a secondary).
        #[arg(long, default_value_t = 7)]
        schools: usize,
        /// Academic years of feeds.
        #[arg(long, default_value_t = 3)]
        years: usize,
        /// Random seed: the same arguments give the same bytes.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First academic year's start (2023 = 2023/24).
        #[arg(long, default_value_t = 2023)]
        first_year: u16,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Models: build the bundled default offline, or train, list, show and activate on a server.
    Model {
        #[command(subcommand)]
        action: ModelCommand,
    },
    /// A school's pupils for a term, highest risk first, with reasons.
    Risks {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        at: crate::cli_client::SchoolTermArgs,
        /// How many pupils to show.
        #[arg(long, default_value_t = 20)]
        limit: i32,
    },
    /// Cohorts: propose, show, and the link worker's review.
    Cohort {
        #[command(subcommand)]
        action: crate::cli_client::CohortClient,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        action: crate::cli_client::AuditClient,
    },
    /// Reports for analysts.
    Report {
        #[command(subcommand)]
        action: ReportCommand,
    },
    /// Read stored submissions.
    Submissions {
        #[command(subcommand)]
        action: SubmissionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, alone, on stdout. It is shown once and stored only hashed.
    Create {
        /// admin, analyst, school, link_worker or service.
        #[arg(long)]
        role: Role,
        /// School URN the key covers (repeat for several); required for school and link_worker.
        #[arg(long = "school")]
        schools: Vec<Urn>,
        /// A note to recognise the key by (e.g. who holds it).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by its id (from `keys list`).
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Train, list, show or activate models on a server.
    #[command(flatten)]
    Server(crate::cli_client::ModelClient),
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

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Confirm/remove/add rates by school, reason, model and group.
    Overrides {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubmissionsCommand {
    /// List submissions, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this school.
        #[arg(long)]
        school: Option<String>,
        /// Include superseded submissions.
        #[arg(long)]
        all: bool,
    },
}

/// Logs to stderr; `RUST_LOG` overrides `default_level`.
pub fn init_tracing(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Demo { schools, years, seed, capacity, keep } => {
            let opts = crate::demo::DemoOptions { schools, years, seed, capacity, keep };
            crate::demo::run(opts, &mut std::io::stdout()).await?;
            Ok(0)
        }
        Command::Serve(settings) => server::run(settings).await.map(|()| 0),
        Command::Keys { action, data_dir } => keys(action, data_dir),
        Command::Submit { client, school, year, term, dry_run, request_id, file } => {
            submit(client, &school, &year, &term, dry_run, request_id, file).await
        }
        Command::Model { action: ModelCommand::Server(cmd) } => crate::cli_client::model(cmd).await,
        Command::Model { action: ModelCommand::BuildDefault(args) } => build_default(args),
        Command::Risks { client, at, limit } => crate::cli_client::risks(client, at, limit).await,
        Command::Cohort { action } => crate::cli_client::cohort(action).await,
        Command::Audit { action } => crate::cli_client::audit(action).await,
        Command::Report { action: ReportCommand::Overrides { client } } => crate::cli_client::overrides(client).await,
        Command::Generate { schools, years, seed, first_year, out } => {
            let cfg = crate::synth::WorldConfig { schools, years, seed, first_year, ..Default::default() };
            let world = crate::synth::generate(&cfg).map_err(anyhow::Error::msg)?;
            let manifest = crate::synth::write_world(&world, &out)?;
            let rows: usize = manifest.feeds.iter().map(|f| f.rows).sum();
            crate::out!(
                "wrote {} feeds ({} schools x {} terms, {rows} pupil rows) and manifest.json to {}",
                manifest.feeds.len(),
                manifest.schools.len(),
                world.terms.len(),
                out.display()
            );
            Ok(0)
        }
        Command::Submissions { action: SubmissionsCommand::List { client, school, all } } => {
            list_submissions(client, school, all).await
        }
    }
}

fn keys(action: KeysCommand, data_dir: PathBuf) -> anyhow::Result<i32> {
    let store = Store::open(&data_dir)?;
    match action {
        KeysCommand::Create { role, schools, label } => {
            let schools: BTreeSet<Urn> = schools.into_iter().collect();
            if role.school_scoped() && schools.is_empty() {
                anyhow::bail!("a {role} key must name the schools it covers: add --school URN");
            }
            if !role.school_scoped() && !schools.is_empty() {
                anyhow::bail!("a {role} key is not limited to schools: drop --school");
            }
            let (key, hash, prefix) = generate_key();
            let id = store.create_key(
                &NewKey {
                    key_hash: &hash,
                    prefix: &prefix,
                    role,
                    schools: &schools,
                    label: &label,
                    created_at: now_unix(),
                },
                &operator(),
            )?;
            eprintln!("created key {id} ({role}); it is shown once, below, and stored only as a hash");
            crate::out!("{key}");
        }
        KeysCommand::List => {
            crate::out!("{:>4}  {:<11} {:<10} {:<10} {:<24} label", "id", "role", "prefix", "state", "schools");
            for k in store.list_keys()? {
                let schools: Vec<String> = k.schools.iter().map(Urn::to_string).collect();
                let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                crate::out!(
                    "{:>4}  {:<11} {:<10} {:<10} {:<24} {}",
                    k.id,
                    k.role,
                    k.prefix,
                    state,
                    schools.join(","),
                    k.label
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke_key(id, now_unix(), &operator())? {
                anyhow::bail!("no active key with id {id}");
            }
            crate::out!("revoked key {id}");
        }
    }
    Ok(0)
}

async fn submit(
    args: ClientArgs,
    school: &str,
    year: &str,
    term: &str,
    dry_run: bool,
    request_id: Option<String>,
    file: PathBuf,
) -> anyhow::Result<i32> {
    let urn = Urn::parse(school).map_err(anyhow::Error::msg)?;
    let term = Term::parse(year, term).map_err(anyhow::Error::msg)?;
    let csv = std::fs::read(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let header = pb::SubmissionHeader {
        school_term: Some(crate::api::school_term_pb(urn, term)),
        request_id: request_id.unwrap_or_default(),
        dry_run,
        content_length: csv.len() as u64,
    };
    let mut c = client::feed_client(&args).await?;
    match c.submit_feed(client::submission_stream(header, csv)).await {
        Ok(resp) => {
            let r = resp.into_inner();
            let outcome = pb::SubmitOutcome::try_from(r.outcome).unwrap_or(pb::SubmitOutcome::Unspecified);
            client::print_submission(outcome, &r.submission.unwrap_or_default());
            Ok(0)
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            client::print_rejection(&mut c, &status).await;
            Ok(1)
        }
        Err(status) => anyhow::bail!("{}: {}", status.code().description(), client::safe(status.message())),
    }
}

async fn list_submissions(args: ClientArgs, school: Option<String>, all: bool) -> anyhow::Result<i32> {
    let mut c = client::feed_client(&args).await?;
    let mut token = String::new();
    crate::out!(
        "{:>6}  {:<7} {:<8} {:<7} {:<11} {:>6} {:>8}",
        "id",
        "school",
        "year",
        "term",
        "state",
        "rows",
        "warnings"
    );
    loop {
        let resp = c
            .list_submissions(pb::ListSubmissionsRequest {
                school_urn: school.clone().unwrap_or_default(),
                include_superseded: all,
                page_size: 200,
                page_token: token,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", s.code().description(), s.message()))?
            .into_inner();
        for s in &resp.submissions {
            let st = s.school_term.clone().unwrap_or_default();
            let term =
                pb::TermName::try_from(st.term).map(|t| t.as_str_name().to_ascii_lowercase()).unwrap_or_default();
            let state = pb::SubmissionState::try_from(s.state)
                .map(|t| t.as_str_name().to_ascii_lowercase())
                .unwrap_or_default();
            crate::out!(
                "{:>6}  {:<7} {:<8} {:<7} {:<11} {:>6} {:>8}",
                s.submission_id,
                st.school_urn,
                st.academic_year,
                term,
                state,
                s.row_count,
                s.warning_count
            );
        }
        if resp.next_page_token.is_empty() {
            return Ok(0);
        }
        token = resp.next_page_token;
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
            progress: &mut |m| eprintln!("  {m}"),
        },
    )?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, artifact.to_json())?;
    let card = out.with_extension("card.md");
    std::fs::write(&card, artifact.model_card())?;
    eprintln!("trained in {:.1} s", started.elapsed().as_secs_f64());
    crate::out!("wrote {} and {}", out.display(), card.display());
    Ok(0)
}

/// Key changes are made by the operator on the data directory, not through a key: the audit
/// event names the operator's OS user instead.
fn operator() -> String {
    format!("operator:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

impl Command {
    /// The demo prints its own narrative; the in-process server's info logs would bury it.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Demo { .. } => "warn",
            _ => "info",
        }
    }
}
