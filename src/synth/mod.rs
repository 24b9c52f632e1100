//! Synthetic school data: a borough whose pupils move through time, deterministic by seed.
//!
//! No real children's data is used anywhere in riskid. This world follows the feed contract
//! exactly and carries realistic signal: latent, persistent, correlated traits per pupil
//! (attendance propensity, conduct, emotional wellbeing, disadvantage) that drift term to
//! term, school effects, and national reference rates (see `docs/generator.md`).

mod csv_out;
mod ctf_out;
mod population;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::domain::{PupilTerm, Term, TermName, Urn};
pub use csv_out::{feed_csv, row_cells};
pub use ctf_out::{LEA, estab, feed_ctf, term_marks};
pub use population::{Oracle, Simulation, Truth};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    /// Schools in the borough; about one in six is a secondary (at least one when 2 or more).
    pub schools: usize,
    /// Academic years of feeds (three terms each).
    pub years: usize,
    pub seed: u64,
    /// First academic year (2023 = 2023/24).
    pub first_year: u16,
    /// Pupils per year group: primary, secondary.
    pub primary_year_size: usize,
    pub secondary_year_size: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self { schools: 7, years: 3, seed: 42, first_year: 2023, primary_year_size: 30, secondary_year_size: 180 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Primary,
    Secondary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct School {
    pub urn: Urn,
    pub name: String,
    pub phase: Phase,
    pub la: String,
}

/// One school's feed for one term.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    pub urn: Urn,
    pub term: Term,
    pub rows: Vec<PupilTerm>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub config: WorldConfig,
    pub schools: Vec<School>,
    pub terms: Vec<Term>,
    /// In term order, then school order.
    pub feeds: Vec<Feed>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFeed {
    pub urn: Urn,
    pub academic_year: String,
    pub term: TermName,
    pub file: String,
    pub rows: usize,
    /// The same feed as a Common Transfer File and its supplement (in `ctf/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctf: Option<CtfFiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtfFiles {
    pub file: String,
    pub supplement: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub config: WorldConfig,
    pub schools: Vec<School>,
    pub feeds: Vec<ManifestFeed>,
}

impl WorldConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.schools == 0 || self.schools > 500 {
            return Err("schools must be 1–500".into());
        }
        if self.years == 0 || self.years > 20 {
            return Err("years must be 1–20".into());
        }
        if self.primary_year_size == 0 || self.secondary_year_size == 0 {
            return Err("year sizes must be at least 1".into());
        }
        Term::new(self.first_year + self.years as u16, TermName::Autumn)?;
        Ok(())
    }
}

/// A generated world's feeds as CTF + supplement, in feed order (for tests and benches that
/// need them in memory).
pub fn world_ctf(world: &World) -> Vec<(Vec<u8>, Vec<u8>)> {
    let index = ctf_out::Index::new(world);
    world
        .feeds
        .iter()
        .map(|f| {
            let school = world.schools.iter().find(|s| s.urn == f.urn).expect("every feed's school is in the world");
            feed_ctf(school, f, &index)
        })
        .collect()
}

/// Generates the world. The same config gives the same world, bit for bit.
pub fn generate(config: &WorldConfig) -> Result<World, String> {
    config.check()?;
    Ok(population::simulate(config))
}

/// The world and every pupil's oracle: their true next-term chances from the latent state
/// (see [`Oracle`]), for every term. Slower than [`generate`]; for evaluations.
pub fn generate_with_oracle(config: &WorldConfig) -> Result<(World, Vec<Oracle>), String> {
    config.check()?;
    Ok(population::simulate_with_oracle(config))
}

/// The oracle as CSV: `academic_year,term,urn,upn,persistent_absence,suspension,mh_referral`,
/// one row per pupil on roll per term (the chances are for the term after).
pub fn oracle_csv(oracle: &[Oracle]) -> String {
    let mut s = String::from("academic_year,term,urn,upn,persistent_absence,suspension,mh_referral\n");
    for o in oracle {
        s.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.6}\n",
            o.term.academic_year(),
            o.term.name().as_str(),
            o.urn,
            o.upn.as_str(),
            o.next[0],
            o.next[1],
            o.next[2]
        ));
    }
    s
}

/// The file name of a feed: `100001_2025-26_autumn.csv`.
pub fn feed_file_name(urn: Urn, term: Term) -> String {
    format!("{}_{}_{}.csv", urn, term.academic_year().replace('/', "-"), term.name().as_str())
}

/// Writes one CSV per school per term, the same feeds as CTF + supplement in `ctf/`, and
/// `manifest.json` (naming both) into `dir`.
pub fn write_world(world: &World, dir: &Path) -> std::io::Result<Manifest> {
    std::fs::create_dir_all(dir.join("ctf"))?;
    let index = ctf_out::Index::new(world);
    let schools: std::collections::HashMap<Urn, &School> = world.schools.iter().map(|s| (s.urn, s)).collect();
    let mut feeds = Vec::with_capacity(world.feeds.len());
    for f in &world.feeds {
        let file = feed_file_name(f.urn, f.term);
        std::fs::write(dir.join(&file), feed_csv(&f.rows))?;
        let stem = file.trim_end_matches(".csv");
        let ctf = CtfFiles { file: format!("ctf/{stem}.xml"), supplement: format!("ctf/{stem}_supplement.csv") };
        let (xml, supp) = feed_ctf(schools[&f.urn], f, &index);
        std::fs::write(dir.join(&ctf.file), xml)?;
        std::fs::write(dir.join(&ctf.supplement), supp)?;
        feeds.push(ManifestFeed {
            urn: f.urn,
            academic_year: f.term.academic_year(),
            term: f.term.name(),
            file,
            rows: f.rows.len(),
            ctf: Some(ctf),
        });
    }
    let manifest = Manifest {
        generator: format!("riskid {} synthetic world", env!("CARGO_PKG_VERSION")),
        config: world.config.clone(),
        schools: world.schools.clone(),
        feeds,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("manifest.json"), json)?;
    Ok(manifest)
}
