//! Cohort proposal: eligibility and capacity-limited, deterministic ranking. Pure functions.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{NcYear, Upn};

/// How children are ordered for the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Policy {
    /// The chance of at least one adverse outcome, treating the three as independent.
    AnyAdverse,
    /// A weighted mean of the outcome probabilities (persistent absence, suspension, referral).
    Weighted { weights: [f64; 3] },
}

impl Policy {
    pub fn priority(&self, p: &[f64; 3]) -> f64 {
        match self {
            Policy::AnyAdverse => 1.0 - p.iter().map(|q| 1.0 - q).product::<f64>(),
            Policy::Weighted { weights } => {
                let total: f64 = weights.iter().sum();
                weights.iter().zip(p).map(|(w, q)| w * q).sum::<f64>() / total
            }
        }
    }

    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Policy::Weighted { weights } = self
            && (weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0)
        {
            return Err(("policy.weights", "policy weights must be 0 or more, and not all 0".into()));
        }
        Ok(())
    }
}

/// The most children one cohort may propose: far above any school's link-worker capacity,
/// and small enough that a cohort with every member shown fits a client's default 4 MiB.
pub const MAX_CAPACITY: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortParams {
    /// Capacity: how many children the school's link workers can support.
    pub capacity: usize,
    /// Year groups in the programme's range, inclusive (0 = Reception).
    pub min_year: u8,
    pub max_year: u8,
    pub policy: Policy,
    /// Seeds the tie-break, so equal priorities order the same way every time.
    pub seed: u64,
}

impl CohortParams {
    /// What a new proposal must satisfy: [`check`](Self::check) and the largest capacity.
    pub fn check_new(&self) -> Result<(), (&'static str, String)> {
        if self.capacity > MAX_CAPACITY {
            return Err(("capacity", format!("capacity must be from 1 to {MAX_CAPACITY}")));
        }
        self.check()
    }

    /// What any stored cohort satisfies (cohorts made before a limit was added still load).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.capacity == 0 {
            return Err(("capacity", "capacity must be at least 1".into()));
        }
        if self.min_year > self.max_year || self.max_year > 13 {
            let field = if self.max_year > 13 { "max_year" } else { "min_year" };
            return Err((
                field,
                format!("year range {}–{} is not valid (0 = Reception … 13)", self.min_year, self.max_year),
            ));
        }
        self.policy.check()
    }
}

/// A child on roll in the term, with the active model's probabilities.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub upn: Upn,
    pub ncyear: NcYear,
    /// CLA or CPP: statutory involvement, never proposed for early help.
    pub statutory: bool,
    /// Already in a finalised cohort whose two-year programme is still running.
    pub in_programme: bool,
    /// Permanently excluded this term: the child is leaving the school, so a link worker
    /// there cannot support them.
    pub permanently_excluded: bool,
    /// Per-outcome probabilities, in `Outcome::ALL` order.
    pub probabilities: [f64; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ineligible {
    YearGroup,
    Statutory,
    InProgramme,
    PermanentlyExcluded,
}

impl Candidate {
    pub fn eligibility(&self, p: &CohortParams) -> Result<(), Ineligible> {
        let y = self.ncyear.get();
        if y < p.min_year || y > p.max_year {
            Err(Ineligible::YearGroup)
        } else if self.statutory {
            Err(Ineligible::Statutory)
        } else if self.permanently_excluded {
            Err(Ineligible::PermanentlyExcluded)
        } else if self.in_programme {
            Err(Ineligible::InProgramme)
        } else {
            Ok(())
        }
    }
}

/// One proposed child: an index into the candidates, its priority and rank (from 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub candidate: usize,
    pub priority: f64,
    pub rank: usize,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Proposal {
    pub picks: Vec<Pick>,
    pub eligible: usize,
    pub excluded_year_group: usize,
    pub excluded_statutory: usize,
    pub excluded_in_programme: usize,
    pub excluded_permanently: usize,
}

/// A stable, seeded position for ties: independent of input order and platform.
pub fn tie_break(seed: u64, upn: &Upn) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(upn.as_str().as_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// Proposes min(capacity, eligible) children, highest priority first.
pub fn propose(candidates: &[Candidate], params: &CohortParams) -> Proposal {
    let mut out = Proposal::default();
    let mut ranked: Vec<(f64, u64, usize)> = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.iter().enumerate() {
        match c.eligibility(params) {
            Ok(()) => ranked.push((params.policy.priority(&c.probabilities), tie_break(params.seed, &c.upn), i)),
            Err(Ineligible::YearGroup) => out.excluded_year_group += 1,
            Err(Ineligible::Statutory) => out.excluded_statutory += 1,
            Err(Ineligible::InProgramme) => out.excluded_in_programme += 1,
            Err(Ineligible::PermanentlyExcluded) => out.excluded_permanently += 1,
        }
    }
    out.eligible = ranked.len();
    // Priority descending, then the seeded hash, then the UPN (a hash collision still orders).
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then_with(|| candidates[a.2].upn.cmp(&candidates[b.2].upn))
    });
    out.picks = ranked
        .into_iter()
        .take(params.capacity)
        .enumerate()
        .map(|(r, (priority, _, candidate))| Pick { candidate, priority, rank: r + 1 })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::check_letter;

    fn upn(n: u64) -> Upn {
        let rest = format!("{n:012}");
        Upn::parse(&format!("{}{rest}", check_letter(rest.as_bytes()) as char)).unwrap()
    }

    fn cand(n: u64, year: u8, p: f64) -> Candidate {
        Candidate {
            upn: upn(n),
            ncyear: NcYear::new(year).unwrap(),
            statutory: false,
            in_programme: false,
            permanently_excluded: false,
            probabilities: [p, 0.0, 0.0],
        }
    }

    #[test]
    fn a_permanently_excluded_child_is_never_proposed() {
        // The highest risk of all, and excluded this term: left out, and counted.
        let mut top = cand(1, 8, 0.99);
        top.permanently_excluded = true;
        let p = propose(&[top, cand(2, 8, 0.5), cand(3, 8, 0.4)], &params(2));
        let picked: Vec<u64> = p.picks.iter().map(|k| k.candidate as u64).collect();
        assert_eq!(picked, vec![1, 2], "the two others, not the excluded child");
        assert_eq!((p.eligible, p.excluded_permanently), (2, 1));
    }

    fn params(k: usize) -> CohortParams {
        CohortParams { capacity: k, min_year: 7, max_year: 9, policy: Policy::AnyAdverse, seed: 7 }
    }

    #[test]
    fn any_adverse_combines_outcomes() {
        let p = Policy::AnyAdverse.priority(&[0.5, 0.5, 0.0]);
        assert!((p - 0.75).abs() < 1e-12);
        let w = Policy::Weighted { weights: [2.0, 1.0, 1.0] }.priority(&[0.4, 0.0, 0.8]);
        assert!((w - 0.4).abs() < 1e-12);
        assert!(Policy::Weighted { weights: [0.0; 3] }.check().is_err());
    }

    #[test]
    fn takes_the_highest_eligible_up_to_capacity() {
        let mut c = vec![cand(1, 7, 0.9), cand(2, 8, 0.2), cand(3, 10, 0.99), cand(4, 9, 0.5), cand(5, 8, 0.8)];
        c[4].statutory = true;
        c[1].in_programme = true;
        let p = propose(&c, &params(2));
        let picked: Vec<usize> = p.picks.iter().map(|k| k.candidate).collect();
        assert_eq!(picked, vec![0, 3]);
        assert_eq!((p.eligible, p.excluded_year_group, p.excluded_statutory, p.excluded_in_programme), (2, 1, 1, 1));
        assert_eq!(propose(&c, &params(10)).picks.len(), 2, "min(k, eligible)");
    }

    #[test]
    fn ties_follow_the_seed_not_input_order() {
        let c: Vec<Candidate> = (0..50).map(|i| cand(i, 8, 0.3)).collect();
        let mut rev = c.clone();
        rev.reverse();
        let upns = |cs: &[Candidate], p: &Proposal| -> Vec<Upn> {
            p.picks.iter().map(|k| cs[k.candidate].upn.clone()).collect()
        };
        let a = propose(&c, &params(10));
        let b = propose(&rev, &params(10));
        assert_eq!(upns(&c, &a), upns(&rev, &b));
        let other_seed = propose(&c, &CohortParams { seed: 8, ..params(10) });
        assert_ne!(upns(&c, &a), upns(&c, &other_seed));
    }
}
