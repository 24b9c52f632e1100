//! `riskid risks`, `riskid pupil`, `riskid score`: scores and the reasons behind them.

use std::io::Read;
use std::path::PathBuf;

use super::exit::{Exit, fail, status};
use super::output::{Cell, Format, OutputArgs, Table};
use super::{SchoolTermArgs, enum_word};
use crate::api::pb::{self, risk_service_client::RiskServiceClient};
use crate::client::{Authed, ClientArgs, connect};

#[derive(Debug, clap::Args)]
pub struct RisksArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    at: SchoolTermArgs,
    /// How many pupils to show, highest risk first; 0 for all. Pages are fetched to the limit.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Pupils per request (at most 500).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
    page_size: u16,
    /// Only pupils in this band (for --outcome, or any outcome): low, medium or high.
    #[arg(long, value_parser = ["low", "medium", "high"])]
    band: Option<String>,
    /// With --band: persistent_absence, suspension or mh_referral.
    #[arg(long, value_parser = ["persistent_absence", "suspension", "mh_referral"], requires = "band")]
    outcome: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct PupilArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The pupil's UPN; "-" or absent: read it from stdin.
    upn: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    at: SchoolTermArgs,
    /// A feed CSV (the contract's columns). It is validated here first, exactly as the server
    /// would, and sent in requests of at most 1,500 pupils.
    file: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
}

async fn client(c: &ClientArgs) -> anyhow::Result<RiskServiceClient<Authed>> {
    let (ch, bearer) = connect(c).await?;
    Ok(RiskServiceClient::with_interceptor(ch, bearer))
}

fn band_word(b: i32) -> String {
    pb::Band::try_from(b).map(|b| enum_word(b.as_str_name(), "BAND_")).unwrap_or_default()
}

const COLUMNS: &[&str] = &[
    "upn",
    "school",
    "year",
    "term",
    "ncyear",
    "any_adverse",
    "p_persistent_absence",
    "band_persistent_absence",
    "p_suspension",
    "band_suspension",
    "p_mh_referral",
    "band_mh_referral",
    "statutory",
    "model_id",
    "reasons",
    "flags",
];

fn reasons_json(r: &pb::PupilRisk) -> serde_json::Value {
    r.outcomes
        .iter()
        .map(|o| {
            let name = pb::Outcome::try_from(o.outcome).map(|x| enum_word(x.as_str_name(), "OUTCOME_")).unwrap_or_default();
            let reasons: Vec<serde_json::Value> = o
                .reasons
                .iter()
                .map(|x| {
                    let evidence: Vec<serde_json::Value> = x
                        .evidence
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "measure": pb::Measure::try_from(e.measure).map(|m| enum_word(m.as_str_name(), "MEASURE_")).unwrap_or_default(),
                                "value": e.value, "earlier": e.earlier,
                                "compared_with": e.compared_with, "compared_value": e.compared_value,
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "domain": pb::ReasonDomain::try_from(x.domain).map(|d| enum_word(d.as_str_name(), "REASON_DOMAIN_")).unwrap_or_default(),
                        "text": x.text, "contribution": x.contribution, "evidence": evidence,
                    })
                })
                .collect();
            (name, serde_json::Value::from(reasons))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn risk_row(t: &mut Table, r: &pb::PupilRisk) {
    let st = r.school_term.clone().unwrap_or_default();
    let o = |i: usize| r.outcomes.get(i).cloned().unwrap_or_default();
    let top = r.outcomes.iter().max_by(|a, b| a.probability.total_cmp(&b.probability));
    let summary =
        top.map(|o| o.reasons.iter().map(|x| x.text.clone()).collect::<Vec<_>>().join("; ")).unwrap_or_default();
    t.push(vec![
        r.upn.clone().into(),
        st.school_urn.into(),
        st.academic_year.into(),
        pb::TermName::try_from(st.term).map(|x| enum_word(x.as_str_name(), "TERM_NAME_")).unwrap_or_default().into(),
        r.ncyear.clone().into(),
        Cell::Prob(r.any_adverse),
        Cell::Prob(o(0).probability),
        band_word(o(0).band).into(),
        Cell::Prob(o(1).probability),
        band_word(o(1).band).into(),
        Cell::Prob(o(2).probability),
        band_word(o(2).band).into(),
        r.statutory.into(),
        r.model_id.clone().into(),
        Cell::Json(reasons_json(r), summary),
        r.flags.join("; ").into(),
    ]);
}

/// The narrative form for a terminal: one line per pupil, the top outcome's reasons below.
pub fn print_risk_line(prefix: &str, r: &pb::PupilRisk) {
    let p: Vec<String> =
        r.outcomes.iter().map(|o| format!("{:>5.1}% {:<6}", 100.0 * o.probability, band_word(o.band))).collect();
    crate::out!(
        "{prefix}{}  Y{:<3} any {:>5.1}%  PA {}  susp {}  MH {}",
        r.upn,
        r.ncyear,
        100.0 * r.any_adverse,
        p.first().cloned().unwrap_or_default(),
        p.get(1).cloned().unwrap_or_default(),
        p.get(2).cloned().unwrap_or_default()
    );
    let pad = " ".repeat(prefix.chars().count() + 4);
    if let Some(top) = r.outcomes.iter().max_by(|a, b| a.probability.total_cmp(&b.probability)) {
        for reason in &top.reasons {
            let domain = pb::ReasonDomain::try_from(reason.domain)
                .map(|d| enum_word(d.as_str_name(), "REASON_DOMAIN_"))
                .unwrap_or_default();
            crate::out!("{pad}{domain:<11} {}", reason.text);
        }
    }
    for f in &r.flags {
        crate::out!("{pad}(note: {f})");
    }
}

fn print_risks(risks: &[pb::PupilRisk], format: Format, numbered: bool) -> anyhow::Result<()> {
    if format == Format::Text {
        for (i, r) in risks.iter().enumerate() {
            let prefix = if numbered { format!("{:>4}. ", i + 1) } else { String::new() };
            print_risk_line(&prefix, r);
        }
        return Ok(());
    }
    let mut t = Table::new(COLUMNS);
    for r in risks {
        risk_row(&mut t, r);
    }
    t.print(format)
}

pub async fn school(a: RisksArgs) -> anyhow::Result<i32> {
    let mut c = client(&a.client).await?;
    let band = match a.band.as_deref() {
        Some("low") => pb::Band::Low,
        Some("medium") => pb::Band::Medium,
        Some("high") => pb::Band::High,
        _ => pb::Band::Unspecified,
    };
    let outcome = match a.outcome.as_deref() {
        Some("persistent_absence") => pb::Outcome::PersistentAbsence,
        Some("suspension") => pb::Outcome::Suspension,
        Some("mh_referral") => pb::Outcome::MhReferral,
        _ => pb::Outcome::Unspecified,
    };
    let want = if a.limit == 0 { usize::MAX } else { a.limit };
    let (mut risks, mut token) = (Vec::new(), String::new());
    let (total, model_id) = loop {
        let page = c
            .list_school_risks(pb::ListSchoolRisksRequest {
                school_term: Some(a.at.pb()?),
                band: band as i32,
                outcome: outcome as i32,
                page_size: (want - risks.len()).min(usize::from(a.page_size)) as i32,
                page_token: token,
                view: pb::RiskView::Full as i32,
            })
            .await
            .map_err(status)?
            .into_inner();
        risks.extend(page.risks);
        if page.next_page_token.is_empty() || risks.len() >= want {
            break (page.total_size as usize, page.model_id);
        }
        token = page.next_page_token;
    };
    if a.out.output == Format::Text {
        crate::out!(
            "model {model_id}; highest risk first (next term: persistent absence, suspension, mental-health referral)"
        );
    }
    print_risks(&risks, a.out.output, true)?;
    if risks.len() < total {
        eprintln!("showing {} of {total} pupils; --limit 0 shows all", risks.len());
    }
    Ok(0)
}

pub async fn pupil(a: PupilArgs) -> anyhow::Result<i32> {
    let upn = match a.upn.as_deref() {
        Some(u) if u != "-" => u.to_owned(),
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim().to_owned()
        }
    };
    if upn.is_empty() {
        return Err(fail(Exit::Usage, "give a UPN (or send one on stdin)"));
    }
    let mut c = client(&a.client).await?;
    let r = c
        .get_pupil_risk(pb::GetPupilRiskRequest { upn, view: pb::RiskView::Full as i32 })
        .await
        .map_err(status)?
        .into_inner();
    print_risks(&r.history, a.out.output, false)?;
    Ok(0)
}

pub async fn score(a: ScoreArgs) -> anyhow::Result<i32> {
    let (urn, term) = a.at.parse()?;
    let bytes =
        std::fs::read(&a.file).map_err(|e| fail(Exit::Usage, format!("cannot read {}: {e}", a.file.display())))?;
    let feed = match crate::ingest::parse_csv(&bytes) {
        Ok(f) => f,
        Err(r) => {
            eprintln!("the file breaks the feed contract ({} error(s)); nothing was sent:", r.error_count);
            for v in r.errors.iter().take(50) {
                eprintln!("  line {:>5}  {:<22} {}", v.line, v.column, crate::client::safe(&v.message));
            }
            return Ok(Exit::Rejected as i32);
        }
    };
    let st = crate::api::school_term_pb(urn, term);
    let mut c = client(&a.client).await?;
    let mut all = Vec::with_capacity(feed.rows.len());
    for chunk in feed.rows.chunks(crate::api::codec::MAX_SCORE_PUPILS) {
        let pupils = chunk
            .iter()
            .map(|r| pb::PupilToScore {
                school_term: Some(st.clone()),
                record: Some(crate::api::record_from_cells(&crate::synth::row_cells(r))),
                prior_terms: vec![],
            })
            .collect();
        let resp = c
            .score_records(pb::ScoreRecordsRequest { pupils, view: pb::RiskView::Full as i32 })
            .await
            .map_err(status)?
            .into_inner();
        all.extend(resp.risks);
    }
    print_risks(&all, a.out.output, false)?;
    Ok(0)
}
