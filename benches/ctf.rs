//! Common Transfer File import: a 2,000-pupil secondary's CTF with a full year of attendance
//! marks (its summer export), parsed, derived and validated. Prints figures; run with
//! `cargo bench --bench ctf`. Target: under 300 ms.

use std::time::Instant;

use riskid::domain::TermName;
use riskid::ingest::ctf::{Earlier, Import, parse_ctf};
use riskid::synth::{Phase, WorldConfig, generate, world_ctf};

fn main() {
    let world =
        generate(&WorldConfig { schools: 2, years: 1, seed: 4, secondary_year_size: 400, ..Default::default() })
            .expect("valid config");
    let files = world_ctf(&world);
    let secondary = world.schools.iter().find(|s| s.phase == Phase::Secondary).expect("a secondary").urn;
    let (i, feed) = world
        .feeds
        .iter()
        .enumerate()
        .find(|(_, f)| f.urn == secondary && f.term.name() == TermName::Summer)
        .expect("a summer feed");
    let (xml, supp) = &files[i];
    let marks = xml.windows(17).filter(|w| w == b"<AttendanceMarks>").count();
    println!(
        "CTF: {} pupils ({} with a year of marks), {:.1} MiB of XML, supplement {} KiB",
        feed.rows.len(),
        marks,
        xml.len() as f64 / (1 << 20) as f64,
        supp.len() / 1024
    );
    let imp = Import { ctf: xml, supplement: Some(supp), urn: feed.urn, term: feed.term, max_rows: 10_000 };
    // What the store holds of this school's autumn and spring (for pupils exported without
    // marks, whose year-to-date totals are reduced by them).
    let mut before: std::collections::HashMap<String, Earlier> = std::collections::HashMap::new();
    for f in world.feeds.iter().filter(|f| f.urn == feed.urn && f.term < feed.term) {
        for r in &f.rows {
            let e = before.entry(r.upn.as_str().to_owned()).or_default();
            e.possible += u32::from(r.sessions_possible);
            e.authorised += u32::from(r.sessions_authorised);
            e.unauthorised += u32::from(r.sessions_unauthorised);
        }
    }
    let earlier = |u: &riskid::domain::Upn| Ok(before.get(u.as_str()).copied().unwrap_or_default());
    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let out = parse_ctf(&imp, &earlier).expect("the generated CTF is valid");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out.rows.len(), feed.rows.len());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "import (parse XML + supplement, derive, validate): median {:.1} ms, best {:.1} ms, worst {:.1} ms  (target < 300 ms)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    let mb = xml.len() as f64 / (1 << 20) as f64;
    println!("throughput: {:.0} MiB/s of XML", mb / (times[times.len() / 2] / 1e3));
}
