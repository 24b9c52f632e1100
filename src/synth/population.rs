//! The simulation: pupils with latent traits, moving through schools and terms.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Normal, Poisson};

use super::{Feed, Phase, School, World, WorldConfig};
use crate::domain::{Attainment, Cin, Ethnicity, NcYear, PupilTerm, Sen, Sex, Term, TermName, Upn, Urn, check_letter};

/// Ethnicity mix, roughly England's school population (weights sum to 100).
const ETHNICITIES: &[(Ethnicity, f64)] = &[
    (Ethnicity::Wbri, 64.0),
    (Ethnicity::Woth, 7.0),
    (Ethnicity::Wiri, 0.3),
    (Ethnicity::Wirt, 0.1),
    (Ethnicity::Wrom, 0.6),
    (Ethnicity::Mwbc, 1.9),
    (Ethnicity::Mwba, 0.9),
    (Ethnicity::Mwas, 1.3),
    (Ethnicity::Moth, 2.1),
    (Ethnicity::Aind, 3.5),
    (Ethnicity::Apkn, 4.6),
    (Ethnicity::Aban, 1.9),
    (Ethnicity::Aoth, 2.0),
    (Ethnicity::Chne, 0.6),
    (Ethnicity::Bafr, 4.0),
    (Ethnicity::Bcrb, 1.1),
    (Ethnicity::Both, 0.6),
    (Ethnicity::Ooth, 1.9),
    (Ethnicity::Refu, 0.8),
    (Ethnicity::Nobt, 0.5),
];

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A child in the simulation. Traits are standardised latent values.
struct Pupil {
    upn: Upn,
    sex: Sex,
    ethnicity: Ethnicity,
    eal: bool,
    fsm: bool,
    sen: Sen,
    cin: Option<Cin>,
    young_carer: bool,
    school: usize,
    year: u8,
    /// Persistent propensities.
    attend: f64,
    conduct: f64,
    emotional: f64,
    ability: f64,
    /// Share of absence that comes as separate short spells (0..1).
    spelliness: f64,
    /// Term-to-term drift (AR(1)) of absence, conduct and wellbeing.
    drift: [f64; 3],
    moves: u8,
    /// Joined part-way through the current term.
    joined_this_term: bool,
    left: bool,
    /// Support received (a link worker): lowers the logits of absence, suspension and
    /// referral by this much, from the term after the cohort is finalised. 0 = none.
    support: f64,
}

struct Sim {
    cfg: WorldConfig,
    rng: ChaCha8Rng,
    next_serial: u64,
    schools: Vec<School>,
    /// School effects on absence and behaviour, and whether it records behaviour and SDQ.
    school_fx: Vec<(f64, f64, bool)>,
    pupils: Vec<Pupil>,
    std: Normal<f64>,
    /// For supported pupils: what the support changed in each term's expected outcomes.
    truth: Vec<Truth>,
}

/// The true effect of support on one supported pupil in one term: expected outcome with the
/// support minus without it (the generator knows both; no data shows them).
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub term: Term,
    pub upn: Upn,
    /// Attendance rate (1 − absence rate), persistent absence, suspension or exclusion,
    /// mental-health referral: expected value with support minus without.
    pub attendance: f64,
    pub persistent_absence: f64,
    pub suspension: f64,
    pub mh_referral: f64,
}

/// What the generator knows and no data shows: a pupil's true chance, in the term after
/// `term`, of each outcome, from the latent state it holds at the end of `term` (traits, drift,
/// school, support), integrated over the next term's shocks. The best any model could do.
#[derive(Debug, Clone, PartialEq)]
pub struct Oracle {
    pub term: Term,
    pub urn: Urn,
    pub upn: Upn,
    /// Persistent absence, suspension or exclusion, mental-health referral (`Outcome::ALL`).
    pub next: [f64; 3],
}

/// Nodes and weights of a standard normal on a grid (−6 to 6 by 0.25): smooth integrands of
/// one normal shock are exact to well under 1e-6.
fn normal_grid() -> Vec<(f64, f64)> {
    let nodes: Vec<f64> = (-24..=24).map(|i| f64::from(i) * 0.25).collect();
    let w: Vec<f64> = nodes.iter().map(|z| (-0.5 * z * z).exp()).collect();
    let total: f64 = w.iter().sum();
    nodes.into_iter().zip(w).map(|(z, w)| (z, w / total)).collect()
}

/// P(Binomial(n, p) ≥ k).
fn binomial_at_least(n: u16, p: f64, k: u16) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let (n, p) = (f64::from(n), p.clamp(1e-12, 1.0 - 1e-12));
    // Sum the pmf below k, by the recurrence pmf(i+1) = pmf(i) (n−i)/(i+1) p/(1−p).
    let mut pmf = (1.0 - p).powf(n);
    let mut below = 0.0;
    for i in 0..k {
        below += pmf;
        let i = f64::from(i);
        pmf *= (n - i) / (i + 1.0) * p / (1.0 - p);
    }
    (1.0 - below).clamp(0.0, 1.0)
}

impl Sim {
    fn new(cfg: &WorldConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let secondaries = if cfg.schools >= 2 { (cfg.schools / 6).max(1) } else { 0 };
        let mut schools = Vec::new();
        let mut school_fx = Vec::new();
        let std = Normal::new(0.0, 1.0).expect("valid normal");
        for i in 0..cfg.schools {
            let phase = if i < cfg.schools - secondaries { Phase::Primary } else { Phase::Secondary };
            let (urn, name) = match phase {
                Phase::Primary => (110_001 + i as u32, format!("Synthetic Primary {}", i + 1)),
                Phase::Secondary => (
                    130_001 + (i - (cfg.schools - secondaries)) as u32,
                    format!("Synthetic High {}", i - (cfg.schools - secondaries) + 1),
                ),
            };
            schools.push(School { urn: Urn::new(urn).expect("6 digits"), name, phase, la: "Synthborough".into() });
            school_fx.push((0.25 * std.sample(&mut rng), 0.3 * std.sample(&mut rng), rng.random_bool(0.85)));
        }
        Self { cfg: cfg.clone(), rng, next_serial: 1, schools, school_fx, pupils: Vec::new(), std, truth: Vec::new() }
    }

    fn n(&mut self) -> f64 {
        self.std.sample(&mut self.rng)
    }

    fn new_upn(&mut self) -> Upn {
        let rest = format!("359{:09}", self.next_serial);
        self.next_serial += 1;
        let s = format!("{}{}", check_letter(rest.as_bytes()) as char, rest);
        Upn::parse(&s).expect("generated UPNs are valid")
    }

    fn new_pupil(&mut self, school: usize, year: u8) -> Pupil {
        let upn = self.new_upn();
        let sex = if self.rng.random_bool(0.5) { Sex::M } else { Sex::F };
        let total: f64 = ETHNICITIES.iter().map(|e| e.1).sum();
        let mut pick = self.rng.random_range(0.0..total);
        let mut ethnicity = Ethnicity::Wbri;
        for &(e, w) in ETHNICITIES {
            if pick < w {
                ethnicity = e;
                break;
            }
            pick -= w;
        }
        let eal = match ethnicity.group() {
            "White" if ethnicity == Ethnicity::Wbri => self.rng.random_bool(0.01),
            "White" => self.rng.random_bool(0.55),
            "Mixed" => self.rng.random_bool(0.15),
            _ => self.rng.random_bool(0.6),
        };
        // Disadvantage drives FSM, SEN and every trait a little.
        let disadvantage = self.n();
        let fsm = sigmoid(-1.45 + 1.3 * disadvantage) > self.rng.random::<f64>();
        let sen_draw = self.n() + 0.35 * disadvantage + if sex == Sex::M { 0.25 } else { -0.1 };
        let sen = if sen_draw > 1.72 {
            Sen::E
        } else if sen_draw > 0.98 {
            Sen::K
        } else {
            Sen::N
        };
        let r = self.rng.random::<f64>() - 0.02 * disadvantage.max(0.0);
        let cin = if r < 0.005 {
            Some(Cin::Cla)
        } else if r < 0.010 {
            Some(Cin::Cpp)
        } else if r < 0.035 {
            Some(Cin::Cin)
        } else {
            None
        };
        let senw = match sen {
            Sen::N => 0.0,
            Sen::K => 0.5,
            Sen::E => 0.8,
        };
        let attend = 0.75 * self.n() + 0.45 * disadvantage + 0.5 * senw;
        let conduct =
            0.8 * self.n() + 0.45 * disadvantage + 0.4 * senw + if sex == Sex::M { 0.35 } else { -0.15 } + 0.2 * attend;
        let emotional = 0.85 * self.n() + 0.25 * disadvantage + 0.35 * senw + 0.2 * attend;
        let ability = self.n() - 0.45 * disadvantage - 1.2 * senw;
        let spelliness = (0.35 + 0.15 * self.n()).clamp(0.1, 0.9);
        Pupil {
            upn,
            sex,
            ethnicity,
            eal,
            fsm,
            sen,
            cin,
            young_carer: self.rng.random_bool(0.02 + 0.02 * disadvantage.max(0.0)),
            school,
            year,
            attend,
            conduct,
            emotional,
            ability,
            spelliness,
            drift: [0.0; 3],
            moves: 0,
            joined_this_term: false,
            left: false,
            support: 0.0,
        }
    }

    fn year_size(&mut self, phase: Phase) -> usize {
        let base = match phase {
            Phase::Primary => self.cfg.primary_year_size,
            Phase::Secondary => self.cfg.secondary_year_size,
        } as f64;
        (base * self.rng.random_range(0.8..1.2)).round().max(1.0) as usize
    }

    fn seed_population(&mut self) {
        for s in 0..self.schools.len() {
            let years = match self.schools[s].phase {
                Phase::Primary => 0..=6,
                Phase::Secondary => 7..=11,
            };
            for y in years {
                for _ in 0..self.year_size(self.schools[s].phase) {
                    let p = self.new_pupil(s, y);
                    self.pupils.push(p);
                }
            }
        }
    }

    /// Start of an academic year: year groups advance, Year 6 moves up, Year 11 leaves,
    /// a new Reception (and a few Year 7 arrivals from outside) join.
    fn new_year(&mut self) {
        let secondaries: Vec<usize> =
            (0..self.schools.len()).filter(|&s| self.schools[s].phase == Phase::Secondary).collect();
        for i in 0..self.pupils.len() {
            if self.pupils[i].left {
                continue;
            }
            self.pupils[i].year += 1;
            match self.pupils[i].year {
                7 if secondaries.is_empty() => self.pupils[i].left = true,
                7 => {
                    let to = secondaries[self.rng.random_range(0..secondaries.len())];
                    self.pupils[i].school = to;
                }
                12 => self.pupils[i].left = true,
                _ => {}
            }
        }
        for s in 0..self.schools.len() {
            let (year, count) = match self.schools[s].phase {
                Phase::Primary => (0, self.year_size(Phase::Primary)),
                Phase::Secondary => (7, self.year_size(Phase::Secondary) / 10),
            };
            for _ in 0..count {
                let p = self.new_pupil(s, year);
                self.pupils.push(p);
            }
        }
    }

    /// Between terms: some leave, a few join part-way, traits drift with shocks.
    fn churn(&mut self) {
        for i in 0..self.pupils.len() {
            let p = &mut self.pupils[i];
            p.joined_this_term = false;
            if !p.left && self.rng.random_bool(0.012) {
                p.left = true;
            }
        }
        for s in 0..self.schools.len() {
            let phase = self.schools[s].phase;
            let roll = self.pupils.iter().filter(|p| !p.left && p.school == s).count();
            let joiners = (roll as f64 * 0.012).round() as usize;
            for _ in 0..joiners {
                let year = match phase {
                    Phase::Primary => self.rng.random_range(0..=6),
                    Phase::Secondary => self.rng.random_range(7..=11),
                };
                let mut p = self.new_pupil(s, year);
                p.moves = self.rng.random_range(1..=3);
                p.joined_this_term = true;
                // Moving school mid-year often follows difficulty.
                p.attend += 0.3;
                p.emotional += 0.2;
                self.pupils.push(p);
            }
        }
        let shock = Normal::new(0.0, 0.55).expect("valid normal");
        for p in self.pupils.iter_mut().filter(|p| !p.left) {
            for (d, rho) in p.drift.iter_mut().zip([0.5, 0.6, 0.7]) {
                *d = rho * *d + shock.sample(&mut self.rng);
            }
            // Many short spells tend to precede rising absence.
            p.drift[0] += 0.25 * (p.spelliness - 0.35);
            if self.rng.random_bool(0.01) {
                p.fsm = !p.fsm && self.rng.random_bool(0.6);
            }
        }
    }

    /// The oracle for pupil `i` after `term` was observed: the model of `observe` and
    /// `churn`, in expectation over the next term's drift shocks, session count and (for a
    /// move up to secondary) school.
    fn oracle(&self, i: usize, term: Term, grid: &[(f64, f64)]) -> [f64; 3] {
        let p = &self.pupils[i];
        let next = term.next();
        let year = if next.name() == TermName::Autumn { p.year + 1 } else { p.year };
        let schools: Vec<usize> = if year == 7 && p.year == 6 {
            let s: Vec<usize> =
                (0..self.schools.len()).filter(|&s| self.schools[s].phase == Phase::Secondary).collect();
            if s.is_empty() { vec![p.school] } else { s }
        } else {
            vec![p.school]
        };
        let season = match next.name() {
            TermName::Autumn => -0.12,
            TermName::Spring => 0.0,
            TermName::Summer => 0.18,
        };
        let base_possible: u16 = match next.name() {
            TermName::Autumn => 142,
            TermName::Spring => 118,
            TermName::Summer => 126,
        };
        let secondary = year >= 7;
        let fsm = f64::from(u8::from(p.fsm));
        let year_fx = match year {
            0..=4 => -2.3,
            5..=6 => -1.7,
            7 | 11 => 0.0,
            8..=10 => 0.45,
            _ => 0.0,
        };
        let sd = 0.55;
        let mut out = [0.0; 3];
        for &s in &schools {
            let (school_abs, school_beh, _) = self.school_fx[s];
            let (mut pa, mut susp, mut mh) = (0.0, 0.0, 0.0);
            for &(z, w) in grid {
                let d0 = 0.5 * p.drift[0] + sd * z + 0.25 * (p.spelliness - 0.35);
                let abs_logit = -3.08
                    + 0.52 * p.attend
                    + 0.9 * d0
                    + if secondary { 0.3 } else { 0.0 }
                    + 0.2 * fsm
                    + school_abs
                    + season;
                let rate = sigmoid(abs_logit - p.support).min(0.95);
                // Sessions possible: base minus 0–5, evenly.
                let pa_z: f64 = (0..6u16)
                    .map(|m| {
                        let possible = base_possible - m;
                        binomial_at_least(possible, rate, (u32::from(possible) * 10).div_ceil(100) as u16)
                    })
                    .sum::<f64>()
                    / 6.0;
                pa += w * pa_z;
                let c = p.conduct + 0.6 * (0.6 * p.drift[1] + sd * z);
                susp += w * sigmoid(-4.75 + 1.1 * c + 1.3 * fsm + year_fx + school_beh - p.support);
                let e = p.emotional + 0.6 * (0.7 * p.drift[2] + sd * z);
                let cin = if p.cin.is_some() { 0.7 } else { 0.0 };
                mh += w * sigmoid(-4.85 + 0.95 * e + 0.11 * f64::from(year) + cin + 0.2 * fsm - p.support);
            }
            let n = schools.len() as f64;
            out[0] += pa / n;
            out[1] += susp / n;
            out[2] += mh / n;
        }
        out
    }

    fn observe(&mut self, i: usize, term: Term, sdq_survey: bool) -> PupilTerm {
        let (school_abs, school_beh, records_behaviour) = self.school_fx[self.pupils[i].school];
        let z: [f64; 7] = std::array::from_fn(|_| self.n());
        let season = match term.name() {
            TermName::Autumn => -0.12,
            TermName::Spring => 0.0,
            TermName::Summer => 0.18,
        };
        let p = &self.pupils[i];
        let secondary = p.year >= 7;
        let fsm = f64::from(u8::from(p.fsm));
        // Absence.
        let base_possible = match term.name() {
            TermName::Autumn => 142,
            TermName::Spring => 118,
            TermName::Summer => 126,
        };
        let possible: u16 = if p.joined_this_term {
            self.rng.random_range(6..base_possible)
        } else {
            base_possible - self.rng.random_range(0..6)
        };
        let abs_logit = -3.08
            + 0.52 * p.attend
            + 0.9 * p.drift[0]
            + if secondary { 0.3 } else { 0.0 }
            + 0.2 * fsm
            + school_abs
            + season;
        let support = p.support;
        let unsupported_rate = sigmoid(abs_logit).min(0.95);
        let rate = sigmoid(abs_logit - support).min(0.95);
        let absent = Binomial::new(u64::from(possible), rate).expect("valid binomial").sample(&mut self.rng) as u16;
        let unauth_share = sigmoid(-1.1 + 0.9 * fsm + 0.5 * p.attend + if secondary { 0.4 } else { 0.0 });
        let unauthorised =
            Binomial::new(u64::from(absent), unauth_share).expect("valid binomial").sample(&mut self.rng) as u16;
        // Separate spells need a present session between them: at most one more than those.
        let spells = if absent == 0 {
            0
        } else {
            ((f64::from(absent) * p.spelliness).round() as u16).clamp(1, absent).min(possible - absent + 1)
        };
        // Behaviour and suspension.
        let c = p.conduct + 0.6 * p.drift[1];
        let year_fx = match p.year {
            0..=4 => -2.3,
            5..=6 => -1.7,
            7 | 11 => 0.0,
            8..=10 => 0.45,
            _ => 0.0,
        };
        let incidents_mean = (0.4 + 0.9 * c + if secondary { 0.6 } else { 0.0 } + school_beh).exp();
        let incidents = Poisson::new(incidents_mean.max(0.01)).expect("valid").sample(&mut self.rng) as u16;
        let susp_logit = -4.75 + 1.1 * c + 1.3 * fsm + year_fx + school_beh;
        let susp_p = sigmoid(susp_logit - support);
        let suspensions: u8 = if self.rng.random_bool(susp_p) {
            1 + Poisson::new(0.35).expect("valid").sample(&mut self.rng) as u8
        } else {
            0
        };
        let permanent_exclusion = suspensions > 0 && secondary && self.rng.random_bool(0.03);
        let suspension_sessions = suspensions * self.rng.random_range(1..=4u8);
        // Wellbeing.
        let e = p.emotional + 0.6 * p.drift[2];
        let age_fx = 0.11 * f64::from(p.year);
        let mh_logit = -4.85 + 0.95 * e + age_fx + if p.cin.is_some() { 0.7 } else { 0.0 } + 0.2 * fsm;
        let mh_p = sigmoid(mh_logit - support);
        if support != 0.0 {
            // Persistent absence: absent ≥ 10% of possible, absent ~ Binomial(possible, rate).
            let k = (u32::from(possible) * 10).div_ceil(100) as u16;
            let pa = |r: f64| if possible >= 20 { binomial_at_least(possible, r, k) } else { 0.0 };
            self.truth.push(Truth {
                term,
                upn: p.upn.clone(),
                attendance: unsupported_rate - rate,
                persistent_absence: pa(rate) - pa(unsupported_rate),
                suspension: susp_p - sigmoid(susp_logit),
                mh_referral: mh_p - sigmoid(mh_logit),
            });
        }
        let mh_referral = self.rng.random_bool(mh_p);
        let clamp = |v: f64| v.round().clamp(0.0, 10.0) as u8;
        let sdq = sdq_survey && p.year >= 2 && self.rng.random_bool(0.85);
        let [n1, n2, n3, n4, n5, ne, nm] = z;
        let ability = p.ability;
        let attainment = |rng: &mut ChaCha8Rng, noise: f64| -> Option<Attainment> {
            if rng.random_bool(0.07) {
                return None;
            }
            let a = ability + 0.5 * noise;
            Some(if a < -0.55 {
                Attainment::Below
            } else if a > 0.95 {
                Attainment::Above
            } else {
                Attainment::Expected
            })
        };
        let attainment_english = if p.year == 0 { None } else { attainment(&mut self.rng, ne) };
        let attainment_maths = if p.year == 0 { None } else { attainment(&mut self.rng, nm) };
        let p = &self.pupils[i];
        PupilTerm {
            upn: p.upn.clone(),
            ncyear: NcYear::new(p.year).expect("year in range"),
            sex: p.sex,
            ethnicity: p.ethnicity,
            fsm: p.fsm,
            eal: p.eal,
            sen: p.sen,
            cin: p.cin,
            young_carer: if self.rng.random_bool(0.7) { Some(p.young_carer) } else { None },
            school_moves: if self.rng.random_bool(0.85) { Some(p.moves) } else { None },
            sessions_possible: possible,
            sessions_authorised: absent - unauthorised,
            sessions_unauthorised: unauthorised,
            absence_spells: if self.rng.random_bool(0.9) { Some(spells) } else { None },
            suspensions,
            suspension_sessions: if self.rng.random_bool(0.9) { Some(suspension_sessions) } else { None },
            permanent_exclusion,
            behaviour_incidents: records_behaviour.then_some(incidents.min(500)),
            attainment_english,
            attainment_maths,
            sdq_emotional: sdq.then(|| clamp(2.6 + 2.0 * e + 0.9 * n1)),
            sdq_conduct: sdq.then(|| clamp(1.6 + 1.6 * c + 0.9 * n2)),
            sdq_hyperactivity: sdq.then(|| clamp(3.2 + 1.4 * c + 0.3 * p.attend + 1.2 * n3)),
            sdq_peer: sdq.then(|| clamp(1.6 + 1.2 * e + 1.0 * n4)),
            sdq_prosocial: sdq.then(|| clamp(7.6 - 1.1 * c + 1.0 * n5)),
            mh_referral,
        }
    }
}

pub fn simulate(cfg: &WorldConfig) -> World {
    simulate_inner(cfg, false).0
}

/// The world and, for every term, each pupil's oracle (see [`Oracle`]).
pub fn simulate_with_oracle(cfg: &WorldConfig) -> (World, Vec<Oracle>) {
    simulate_inner(cfg, true)
}

fn simulate_inner(cfg: &WorldConfig, with_oracle: bool) -> (World, Vec<Oracle>) {
    let mut sim = Simulation::new(cfg);
    let mut feeds = Vec::new();
    let mut oracle = Vec::new();
    while let Some(term_feeds) = sim.next_term() {
        feeds.extend(term_feeds);
        if with_oracle {
            oracle.extend(sim.oracle());
        }
    }
    let terms = sim.terms.clone();
    (World { config: cfg.clone(), schools: sim.sim.schools, terms, feeds }, oracle)
}

/// The borough term by term, for a closed loop: riskid proposes and finalises cohorts from
/// one term's feeds, and [`Simulation::support`] changes the supported children's next terms.
/// With no support it is exactly [`simulate`]: the same feeds, bit for bit.
pub struct Simulation {
    sim: Sim,
    terms: Vec<Term>,
    next: usize,
}

impl Simulation {
    pub fn new(cfg: &WorldConfig) -> Self {
        let mut sim = Sim::new(cfg);
        sim.seed_population();
        let first = Term::new(cfg.first_year, TermName::Autumn).expect("checked");
        let terms = (0..cfg.years as u32 * 3).map(|k| Term::from_index(first.index() + k)).collect();
        Self { sim, terms, next: 0 }
    }

    pub fn schools(&self) -> &[School] {
        &self.sim.schools
    }

    /// Every term the simulation will produce.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Supports these pupils from the next term on: the logits of their absence, suspension
    /// and referral fall by `effect` (0 = support that does nothing). Pupils not on roll are
    /// ignored.
    pub fn support(&mut self, upns: &[Upn], effect: f64) {
        let set: std::collections::HashSet<&str> = upns.iter().map(|u| u.as_str()).collect();
        for p in self.sim.pupils.iter_mut().filter(|p| set.contains(p.upn.as_str())) {
            p.support = effect;
        }
    }

    /// The true effect of support on each supported pupil in each term observed so far.
    pub fn truth(&self) -> &[Truth] {
        &self.sim.truth
    }

    /// The oracle for every pupil on roll in the term just produced by [`Self::next_term`]:
    /// their true chances of each outcome next term. Empty before the first term.
    pub fn oracle(&self) -> Vec<Oracle> {
        let Some(term) = self.next.checked_sub(1).map(|k| self.terms[k]) else { return Vec::new() };
        let grid = normal_grid();
        let sim = &self.sim;
        (0..sim.pupils.len())
            .map(|i| Oracle {
                term,
                urn: sim.schools[sim.pupils[i].school].urn,
                upn: sim.pupils[i].upn.clone(),
                next: sim.oracle(i, term, &grid),
            })
            .collect()
    }

    /// The next term's feeds, one per school; `None` after the last term.
    pub fn next_term(&mut self) -> Option<Vec<Feed>> {
        let k = self.next;
        let term = *self.terms.get(k)?;
        self.next += 1;
        let sim = &mut self.sim;
        if k > 0 {
            if term.name() == TermName::Autumn {
                sim.new_year();
            }
            sim.churn();
        }
        // Each school surveys wellbeing (SDQ) in some terms only.
        let surveys: Vec<bool> = (0..sim.schools.len())
            .map(|_| match term.name() {
                TermName::Autumn => sim.rng.random_bool(0.55),
                TermName::Spring => sim.rng.random_bool(0.15),
                TermName::Summer => sim.rng.random_bool(0.4),
            })
            .collect();
        let mut by_school: Vec<Vec<PupilTerm>> = vec![Vec::new(); sim.schools.len()];
        for i in 0..sim.pupils.len() {
            if sim.pupils[i].left {
                continue;
            }
            let s = sim.pupils[i].school;
            let row = sim.observe(i, term, surveys[s]);
            by_school[s].push(row);
        }
        let mut feeds = Vec::with_capacity(by_school.len());
        for (s, rows) in by_school.into_iter().enumerate() {
            feeds.push(Feed { urn: sim.schools[s].urn, term, rows });
        }
        sim.pupils.retain(|p| !p.left);
        Some(feeds)
    }
}
