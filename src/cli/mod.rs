//! The command line: one binary for the server, key management and client commands.
//! One job per file: `feeds` (submit, submissions), `risks` (school risks, one pupil,
//! stateless scoring), `models`, `cohorts`, `audit` (trail, verification, reports), `keys`,
//! `generate`; `output` renders every read as text, json or csv; `exit` maps failures to
//! the documented exit codes.

mod audit;
mod cohorts;
pub mod exit;
mod feeds;
mod generate;
mod keys;
mod models;
pub mod output;
mod risks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::pb;
use crate::domain::{Term, Urn};
use crate::server::{self, Settings};

pub use exit::{CliError, Exit};

#[derive(Debug, Parser)]
#[command(
    name = "riskid",
    version,
    about = "Next-term risk scores and link-worker cohorts from termly school data",
    after_help = exit::HELP
)]
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
        /// Schools send what their MIS exports, a DfE Common Transfer File plus a small
        /// supplement, instead of the contract CSV.
        #[arg(long)]
        ctf: bool,
        /// Afterwards keep the servers up, with the web app, and print one sign-in key per
        /// role: one school's cohort is left for you to review in the browser.
        #[arg(long)]
        serve: bool,
        /// Where the web app listens with --serve (a free port if this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080", requires = "serve")]
        web_listen: std::net::SocketAddr,
    },
    /// Run the gRPC server.
    Serve(Settings),
    /// Manage API keys directly in a data directory (works while the server runs).
    Keys {
        #[command(subcommand)]
        action: keys::KeysCommand,
        /// Data directory holding the database.
        #[arg(long, env = "RISKID_DATA_DIR", default_value = "./riskid-data", global = true)]
        data_dir: PathBuf,
    },
    /// Submit a termly feed CSV for one school and term, and print the report.
    #[command(after_help = exit::HELP)]
    Submit(feeds::SubmitArgs),
    /// Read stored submissions and feed reports.
    Submissions {
        #[command(subcommand)]
        action: feeds::SubmissionsCommand,
    },
    /// Generate a synthetic borough's termly feeds (one CSV per school per term + manifest.json).
    Generate(generate::GenerateArgs),
    /// Models: build the bundled default offline, or train, list, show, evaluate and activate on a server.
    Model {
        #[command(subcommand)]
        action: models::ModelCommand,
    },
    /// A school's pupils for a term, highest risk first, with reasons.
    #[command(after_help = exit::HELP)]
    Risks(risks::RisksArgs),
    /// One pupil's scores over time. The UPN is read from stdin unless given (a UPN on the
    /// command line shows in process lists and shell history).
    #[command(after_help = exit::HELP)]
    Pupil(risks::PupilArgs),
    /// Score a feed CSV statelessly with the server's active model: nothing is stored.
    #[command(after_help = exit::HELP)]
    Score(risks::ScoreArgs),
    /// Cohorts: propose, show, list, and the link worker's review.
    Cohort {
        #[command(subcommand)]
        action: cohorts::CohortCommand,
    },
    /// The audit trail: list, verify, checkpoint.
    Audit {
        #[command(subcommand)]
        action: audit::AuditCommand,
    },
    /// Reports for analysts.
    Report {
        #[command(subcommand)]
        action: audit::ReportCommand,
    },
}

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
    pub fn parse(&self) -> anyhow::Result<(Urn, Term)> {
        let urn = Urn::parse(&self.school).map_err(|e| exit::fail(Exit::Usage, format!("--school: {e}")))?;
        let term =
            Term::parse(&self.year, &self.term).map_err(|e| exit::fail(Exit::Usage, format!("--year/--term: {e}")))?;
        Ok((urn, term))
    }

    pub fn pb(&self) -> anyhow::Result<pb::SchoolTerm> {
        let (urn, term) = self.parse()?;
        Ok(crate::api::school_term_pb(urn, term))
    }
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

/// Runs a command; returns the process exit code. Errors carry theirs (see [`exit`]).
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Demo { schools, years, seed, capacity, keep, ctf, serve, web_listen } => {
            let serve = serve.then_some(web_listen);
            let opts = crate::demo::DemoOptions { schools, years, seed, capacity, keep, ctf, serve };
            crate::demo::run_until(opts, &mut std::io::stdout(), server::shutdown_signal()).await?;
            Ok(0)
        }
        Command::Serve(settings) => server::run(settings).await.map(|()| 0),
        Command::Keys { action, data_dir } => keys::run(action, data_dir),
        Command::Submit(args) => feeds::submit(args).await,
        Command::Submissions { action } => feeds::submissions(action).await,
        Command::Generate(args) => generate::run(args),
        Command::Model { action } => models::run(action).await,
        Command::Risks(args) => risks::school(args).await,
        Command::Pupil(args) => risks::pupil(args).await,
        Command::Score(args) => risks::score(args).await,
        Command::Cohort { action } => cohorts::run(action).await,
        Command::Audit { action } => audit::run(action).await,
        Command::Report { action } => audit::report(action).await,
    }
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

/// Key changes are made by the operator on the data directory, not through a key: the audit
/// event names the operator's OS user instead.
fn operator() -> String {
    format!("operator:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// Lower-case name of a proto enum value without its prefix: TERM_NAME_AUTUMN → autumn.
fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}
