//! `riskid generate`: a synthetic borough's termly feeds.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
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
    /// Also write `oracle.csv`: each pupil's true chance of each outcome next term, from the
    /// generator's latent state (no model can see it; evaluations use it as the best achievable).
    #[arg(long)]
    oracle: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<i32> {
    let GenerateArgs { schools, years, seed, first_year, out, oracle } = args;
    let cfg = crate::synth::WorldConfig { schools, years, seed, first_year, ..Default::default() };
    let usage = |e| super::exit::fail(super::Exit::Usage, e);
    let (world, truth) = if oracle {
        let (w, o) = crate::synth::generate_with_oracle(&cfg).map_err(usage)?;
        (w, Some(o))
    } else {
        (crate::synth::generate(&cfg).map_err(usage)?, None)
    };
    let manifest = crate::synth::write_world(&world, &out)?;
    if let Some(o) = &truth {
        std::fs::write(out.join("oracle.csv"), crate::synth::oracle_csv(o))?;
    }
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
