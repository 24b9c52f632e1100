//! `riskid keys`: API keys, managed on the data directory by the operator.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Subcommand;

use super::output::{Cell, OutputArgs, Table};
use crate::auth::{Role, generate_key};
use crate::domain::Urn;
use crate::storage::{NewKey, Store, now_unix};

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
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Revoke a key by its id (from `keys list`).
    Revoke { id: i64 },
}

pub fn run(action: KeysCommand, data_dir: PathBuf) -> anyhow::Result<i32> {
    let store = Store::open(&data_dir)?;
    match action {
        KeysCommand::Create { role, schools, label } => {
            let schools: BTreeSet<Urn> = schools.into_iter().collect();
            if role.school_scoped() && schools.is_empty() {
                return Err(super::exit::fail(
                    super::Exit::Usage,
                    format!("a {role} key must name the schools it covers: add --school URN"),
                ));
            }
            if !role.school_scoped() && !schools.is_empty() {
                return Err(super::exit::fail(
                    super::Exit::Usage,
                    format!("a {role} key is not limited to schools: drop --school"),
                ));
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
                &super::operator(),
            )?;
            eprintln!("created key {id} ({role}); it is shown once, below, and stored only as a hash");
            crate::out!("{key}");
        }
        KeysCommand::List { out } => {
            let mut t = Table::new(&["id", "role", "prefix", "state", "schools", "label"]);
            for k in store.list_keys()? {
                let schools: Vec<String> = k.schools.iter().map(Urn::to_string).collect();
                let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                t.push(vec![
                    Cell::Int(k.id),
                    k.role.to_string().into(),
                    k.prefix.clone().into(),
                    state.into(),
                    schools.join(",").into(),
                    k.label.clone().into(),
                ]);
            }
            t.print(out.output)?;
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke_key(id, now_unix(), &super::operator())? {
                return Err(super::exit::fail(super::Exit::NotFound, format!("no active key with id {id}")));
            }
            crate::out!("revoked key {id}");
        }
    }
    Ok(0)
}
