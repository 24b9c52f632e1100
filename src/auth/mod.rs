//! Who is calling and what they may do. Access fails closed: a capability pass for an
//! operation can only be obtained from a principal that holds the right.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::Urn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Analyst,
    School,
    LinkWorker,
    Service,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Admin, Role::Analyst, Role::School, Role::LinkWorker, Role::Service];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::School => "school",
            Role::LinkWorker => "link_worker",
            Role::Service => "service",
        }
    }
    /// Roles whose keys cover named schools only.
    pub fn school_scoped(self) -> bool {
        matches!(self, Role::School | Role::LinkWorker)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: use admin, analyst, school, link_worker or service"))
    }
}

/// An authenticated caller. Carries no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: i64,
    pub role: Role,
    pub schools: BTreeSet<Urn>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("this key's role ({role}) may not {action}")]
    Role { role: Role, action: &'static str },
    #[error("this key does not cover school {0}")]
    School(Urn),
}

/// Proof that the caller may submit feeds for this school.
// A private field, not `#[non_exhaustive]`: that would still let any module of this crate
// forge a pass; only this module may create one.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug)]
pub struct SubmitPass {
    pub urn: Urn,
    pub key_id: i64,
    _private: (),
}

/// Which submissions a caller may read, and how much of them.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSubmissions {
    /// `None`: every school.
    pub schools: Option<BTreeSet<Urn>>,
    /// Link workers see counts, not the warning lines (which quote pupils' data).
    pub counts_only: bool,
    _private: (),
}

impl ReadSubmissions {
    pub fn covers(&self, urn: Urn) -> bool {
        self.schools.as_ref().is_none_or(|s| s.contains(&urn))
    }
}

/// The schools a read may cover: `None` means every school.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchoolScope {
    pub schools: Option<BTreeSet<Urn>>,
}

impl SchoolScope {
    pub fn covers(&self, urn: Urn) -> bool {
        self.schools.as_ref().is_none_or(|s| s.contains(&urn))
    }
    pub fn check(&self, urn: Urn) -> Result<(), AccessError> {
        if self.covers(urn) { Ok(()) } else { Err(AccessError::School(urn)) }
    }
}

/// Proof that the caller may act on this school's cohort in the given way.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug)]
pub struct CohortPass {
    pub urn: Urn,
    pub key_id: i64,
    pub role: Role,
    _private: (),
}

/// What a caller asks to do: the one role table. The gRPC gateway maps each method to its
/// use case, the web pages name theirs, and the use cases below check the same table (with
/// the school scope for school-scoped roles), so the two surfaces cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UseCase {
    SubmitFeed,
    ReadSubmissions,
    /// Pupils' rows as stored: as for their scores.
    ReadSubmissionRows,
    ScoreRecords,
    ReadRisks,
    ManageModels,
    ProposeCohort,
    ReadCohorts,
    ReviewCohort,
    ReadOutcomes,
    ReadAudit,
}

impl UseCase {
    pub const ALL: [UseCase; 11] = [
        UseCase::SubmitFeed,
        UseCase::ReadSubmissions,
        UseCase::ReadSubmissionRows,
        UseCase::ScoreRecords,
        UseCase::ReadRisks,
        UseCase::ManageModels,
        UseCase::ProposeCohort,
        UseCase::ReadCohorts,
        UseCase::ReviewCohort,
        UseCase::ReadOutcomes,
        UseCase::ReadAudit,
    ];

    /// The roles that may do this. School-scoped roles do it for their own schools only.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            UseCase::SubmitFeed => &[School],
            UseCase::ReadSubmissions => &[Admin, Analyst, School, LinkWorker],
            UseCase::ReadSubmissionRows | UseCase::ReadRisks | UseCase::ReadCohorts => &[Analyst, School, LinkWorker],
            UseCase::ScoreRecords => &[Analyst, Service],
            UseCase::ManageModels => &[Analyst],
            UseCase::ProposeCohort => &[Analyst, LinkWorker],
            UseCase::ReviewCohort => &[LinkWorker],
            UseCase::ReadOutcomes => &[Admin, Analyst, School, LinkWorker],
            UseCase::ReadAudit => &[Admin, Analyst],
        }
    }

    /// In words, for a refusal: "this key's role (school) may not {action}".
    pub fn action(self) -> &'static str {
        match self {
            UseCase::SubmitFeed => "submit feeds",
            UseCase::ReadSubmissions => "read submissions",
            UseCase::ReadSubmissionRows => "read pupils' rows",
            UseCase::ScoreRecords => "score records",
            UseCase::ReadRisks => "read pupils' scores",
            UseCase::ManageModels => "train, evaluate or activate models",
            UseCase::ProposeCohort => "propose cohorts",
            UseCase::ReadCohorts => "read cohorts",
            UseCase::ReviewCohort => "review cohorts",
            UseCase::ReadOutcomes => "read programme outcomes",
            UseCase::ReadAudit => "read the audit log and reports",
        }
    }
}

impl Principal {
    /// Whether the role may do this at all (the school is checked by the use case).
    pub fn may(&self, uc: UseCase) -> Result<(), AccessError> {
        if uc.roles().contains(&self.role) {
            Ok(())
        } else {
            Err(AccessError::Role { role: self.role, action: uc.action() })
        }
    }

    /// The schools the caller may do this for: every school, or a school-scoped key's own.
    pub fn scope_for(&self, uc: UseCase) -> Result<SchoolScope, AccessError> {
        self.may(uc)?;
        Ok(SchoolScope { schools: self.role.school_scoped().then(|| self.schools.clone()) })
    }

    fn cohort_pass(&self, urn: Urn, uc: UseCase) -> Result<CohortPass, AccessError> {
        self.scope_for(uc)?.check(urn)?;
        Ok(CohortPass { urn, key_id: self.key_id, role: self.role, _private: () })
    }

    /// Pupils' scores and reasons: analysts all; schools their own; link workers assigned.
    pub fn may_read_risks(&self) -> Result<SchoolScope, AccessError> {
        self.scope_for(UseCase::ReadRisks)
    }

    /// Cohorts and their decisions: as for scores.
    pub fn may_read_cohorts(&self) -> Result<SchoolScope, AccessError> {
        self.scope_for(UseCase::ReadCohorts)
    }

    pub fn may_propose(&self, urn: Urn) -> Result<CohortPass, AccessError> {
        self.cohort_pass(urn, UseCase::ProposeCohort)
    }

    pub fn may_review(&self, urn: Urn) -> Result<CohortPass, AccessError> {
        self.cohort_pass(urn, UseCase::ReviewCohort)
    }

    pub fn may_score_statelessly(&self) -> Result<(), AccessError> {
        self.may(UseCase::ScoreRecords)
    }

    pub fn may_manage_models(&self) -> Result<(), AccessError> {
        self.may(UseCase::ManageModels)
    }

    /// Programme outcomes (published figures only): analysts and admins all schools; a school
    /// and its link workers their own.
    pub fn may_read_outcomes(&self) -> Result<SchoolScope, AccessError> {
        self.scope_for(UseCase::ReadOutcomes)
    }

    pub fn may_read_audit(&self) -> Result<(), AccessError> {
        self.may(UseCase::ReadAudit)
    }

    pub fn may_submit(&self, urn: Urn) -> Result<SubmitPass, AccessError> {
        self.scope_for(UseCase::SubmitFeed)?.check(urn)?;
        Ok(SubmitPass { urn, key_id: self.key_id, _private: () })
    }

    pub fn may_read_submissions(&self) -> Result<ReadSubmissions, AccessError> {
        let scope = self.scope_for(UseCase::ReadSubmissions)?;
        // Link workers see counts, not the warning lines (which quote pupils' data).
        Ok(ReadSubmissions { schools: scope.schools, counts_only: self.role == Role::LinkWorker, _private: () })
    }
}

/// Keys look like `rk_` + 64 hex digits (256 random bits).
pub const KEY_PREFIX: &str = "rk_";

/// A new random API key: (the key, to show once; its hash, to store; a short prefix to list).
pub fn generate_key() -> (String, String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let hash = hash_key(&key);
    let prefix = key[..KEY_PREFIX.len() + 6].to_owned();
    (key, hash, prefix)
}

/// Keys carry 256 random bits, so a fast unsalted hash is enough: there is nothing to
/// brute-force, unlike a password.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, schools: &[u32]) -> Principal {
        Principal { key_id: 1, role, schools: schools.iter().map(|&u| Urn::new(u).unwrap()).collect() }
    }

    #[test]
    fn only_school_keys_submit_and_only_for_their_schools() {
        let a = Urn::new(100001).unwrap();
        let b = Urn::new(100002).unwrap();
        assert!(p(Role::School, &[100001]).may_submit(a).is_ok());
        assert_eq!(p(Role::School, &[100001]).may_submit(b).unwrap_err(), AccessError::School(b));
        for role in [Role::Admin, Role::Analyst, Role::LinkWorker, Role::Service] {
            assert!(p(role, &[100001]).may_submit(a).is_err(), "{role} must not submit");
        }
    }

    #[test]
    fn submission_reads_by_role() {
        assert!(p(Role::Analyst, &[]).may_read_submissions().unwrap().covers(Urn::new(123456).unwrap()));
        let lw = p(Role::LinkWorker, &[100001]).may_read_submissions().unwrap();
        assert!(lw.counts_only && lw.covers(Urn::new(100001).unwrap()) && !lw.covers(Urn::new(100002).unwrap()));
        assert!(p(Role::Service, &[]).may_read_submissions().is_err());
    }

    #[test]
    fn keys_are_random_and_hashed() {
        let (k1, h1, p1) = generate_key();
        let (k2, _, _) = generate_key();
        assert_ne!(k1, k2);
        assert_eq!(hash_key(&k1), h1);
        assert!(k1.starts_with(&p1) && !h1.contains(&k1[3..]));
    }
}
