//! The Open Inference Protocol v2 (KServe's `inference.GRPCInferenceService`), beside
//! riskid.v1, so that ML platforms and `tritonclient` can score with riskid unchanged.
//!
//! One model, `riskid`, whose version is the active model's id. Its inputs are the feed's
//! columns, one tensor each of shape `[N]` (N pupils), plus `school_urn`, `academic_year`
//! and `term`; earlier terms are optional `prior_`-prefixed tensors of shape `[N, P]`, where
//! an empty `prior_academic_year` marks an unused slot. Every input may be BYTES (the cell's
//! text exactly as in the CSV, "" for empty); counts may also be integers and flags BOOL.
//! Inputs are checked and scored by the very code behind `ScoreRecords`: the same validation,
//! the same model and the same numbers. Outputs: `any_adverse`, `p_persistent_absence`,
//! `p_suspension`, `p_mh_referral` (FP64 `[N]`), `band_…` (BYTES `[N]`: low, medium, high)
//! and `statutory` (BOOL `[N]`).

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::inference::{
    self as oip, grpc_inference_service_server::GrpcInferenceService, model_infer_response::InferOutputTensor,
    model_metadata_response::TensorMetadata,
};
use super::principal;
use super::risk::{CellPupil, check_cell_pupils};
use super::status::bad_field;
use crate::api::codec::MAX_PRIOR_TERMS;
use crate::app::{App, AppError};
use crate::ingest::{COLUMN_COUNT, Column};

/// The model's name on this protocol.
pub const MODEL_NAME: &str = "riskid";
/// Most pupils in one ModelInfer request (the reply has no reasons, so it stays small).
pub const MAX_INFER_PUPILS: usize = 10_000;
/// Most pupil-terms (pupils and their prior terms) in one request, as for ScoreRecords.
pub const MAX_INFER_TERMS: usize = 50_000;

const TERM_INPUTS: [&str; 3] = ["school_urn", "academic_year", "term"];
const OUTCOMES: [&str; 3] = ["persistent_absence", "suspension", "mh_referral"];

pub struct InferenceApi {
    app: Arc<App>,
}

impl InferenceApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Count,
    Flag,
}

fn column_kind(c: Column) -> Kind {
    use Column::*;
    match c {
        Fsm | Eal | YoungCarer | PermanentExclusion | MhReferral => Kind::Flag,
        SchoolMoves | SessionsPossible | SessionsAuthorised | SessionsUnauthorised | AbsenceSpells | Suspensions
        | SuspensionSessions | BehaviourIncidents | SdqEmotional | SdqConduct | SdqHyperactivity | SdqPeer
        | SdqProsocial => Kind::Count,
        _ => Kind::Text,
    }
}

fn output_names() -> Vec<(String, &'static str)> {
    let mut v = vec![("any_adverse".to_string(), "FP64")];
    v.extend(OUTCOMES.iter().map(|o| (format!("p_{o}"), "FP64")));
    v.extend(OUTCOMES.iter().map(|o| (format!("band_{o}"), "BYTES")));
    v.push(("statutory".to_string(), "BOOL"));
    v
}

fn metadata(version: String) -> oip::ModelMetadataResponse {
    let t = |name: String, datatype: &str, shape: Vec<i64>| TensorMetadata { name, datatype: datatype.into(), shape };
    let mut inputs: Vec<TensorMetadata> = TERM_INPUTS.iter().map(|n| t(n.to_string(), "BYTES", vec![-1])).collect();
    inputs.extend(Column::ALL.iter().map(|c| t(c.name().to_string(), "BYTES", vec![-1])));
    inputs.extend(TERM_INPUTS.iter().map(|n| t(format!("prior_{n}"), "BYTES", vec![-1, -1])));
    inputs.extend(Column::ALL.iter().map(|c| t(format!("prior_{}", c.name()), "BYTES", vec![-1, -1])));
    let outputs = output_names().into_iter().map(|(n, d)| t(n, d, vec![-1])).collect();
    oip::ModelMetadataResponse {
        name: MODEL_NAME.into(),
        versions: vec![version],
        platform: "riskid".into(),
        inputs,
        outputs,
    }
}

/// One input's elements as cell text.
fn cells_of(
    i: usize,
    t: &oip::model_infer_request::InferInputTensor,
    raw: Option<&[u8]>,
    kind: Kind,
    want: usize,
) -> Result<Vec<String>, Status> {
    let field = |f: &str| format!("inputs[{i}].{f}");
    let wrong = |m: String| bad_field(field("datatype"), "INVALID_VALUE", m);
    let count = |n: usize| {
        if n == want {
            Ok(())
        } else {
            Err(bad_field(
                field("contents"),
                "INVALID_VALUE",
                format!("{} holds {n} elements; its shape needs {want}", t.name),
            ))
        }
    };
    let empty = oip::InferTensorContents::default();
    let c = t.contents.as_ref().unwrap_or(&empty);
    // Every count is checked before any element is converted: a packed tensor of a million
    // one-byte BOOLs must not become a million strings first.
    let ints = |v: &mut dyn Iterator<Item = i128>| -> Vec<String> { v.map(|x| x.to_string()).collect() };
    let out: Vec<String> = match (t.datatype.as_str(), raw) {
        ("BYTES", Some(mut raw)) => {
            let mut v = Vec::with_capacity(want);
            while !raw.is_empty() {
                let (len, rest) = raw.split_at_checked(4).ok_or_else(|| {
                    bad_field(
                        format!("raw_input_contents[{i}]"),
                        "INVALID_VALUE",
                        "a BYTES element's length is cut short",
                    )
                })?;
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                let (item, rest) = rest.split_at_checked(len).ok_or_else(|| {
                    bad_field(format!("raw_input_contents[{i}]"), "INVALID_VALUE", "a BYTES element is cut short")
                })?;
                v.push(utf8(item, i)?);
                raw = rest;
                if v.len() > want {
                    break;
                }
            }
            v
        }
        ("BYTES", None) => {
            count(c.bytes_contents.len())?;
            c.bytes_contents.iter().map(|b| utf8(b, i)).collect::<Result<_, _>>()?
        }
        ("BOOL", raw) if kind == Kind::Flag => {
            let flag = |b: bool| if b { "Y" } else { "N" }.to_string();
            match raw {
                Some(r) => {
                    count(r.len())?;
                    r.iter().map(|b| flag(*b != 0)).collect()
                }
                None => {
                    count(c.bool_contents.len())?;
                    c.bool_contents.iter().map(|&b| flag(b)).collect()
                }
            }
        }
        (dt @ ("INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64"), raw)
            if kind == Kind::Count =>
        {
            match raw {
                Some(r) => {
                    let (width, signed) = match dt {
                        "INT8" => (1, true),
                        "INT16" => (2, true),
                        "INT32" => (4, true),
                        "INT64" => (8, true),
                        "UINT8" => (1, false),
                        "UINT16" => (2, false),
                        "UINT32" => (4, false),
                        _ => (8, false),
                    };
                    if r.len() % width != 0 {
                        return Err(bad_field(
                            format!("raw_input_contents[{i}]"),
                            "INVALID_VALUE",
                            format!("{} bytes is not a whole number of {dt} elements", r.len()),
                        ));
                    }
                    count(r.len() / width)?;
                    ints(&mut r.chunks(width).map(|b| le_int(b, signed)))
                }
                None => match dt {
                    "INT64" => {
                        count(c.int64_contents.len())?;
                        ints(&mut c.int64_contents.iter().map(|&x| x as i128))
                    }
                    "UINT64" => {
                        count(c.uint64_contents.len())?;
                        ints(&mut c.uint64_contents.iter().map(|&x| x as i128))
                    }
                    "UINT8" | "UINT16" | "UINT32" => {
                        count(c.uint_contents.len())?;
                        ints(&mut c.uint_contents.iter().map(|&x| x as i128))
                    }
                    _ => {
                        count(c.int_contents.len())?;
                        ints(&mut c.int_contents.iter().map(|&x| x as i128))
                    }
                },
            }
        }
        (dt, _) => {
            let allowed = match kind {
                Kind::Text => "BYTES",
                Kind::Count => "BYTES or an integer type",
                Kind::Flag => "BYTES or BOOL",
            };
            return Err(wrong(format!("{} is {dt}; it must be {allowed}", t.name)));
        }
    };
    count(out.len())?;
    Ok(out)
}

fn le_int(b: &[u8], signed: bool) -> i128 {
    let mut buf = [0u8; 16];
    buf[..b.len()].copy_from_slice(b);
    if signed && b.last().is_some_and(|x| x & 0x80 != 0) {
        buf[b.len()..].fill(0xff);
    }
    i128::from_le_bytes(buf)
}

fn utf8(b: &[u8], i: usize) -> Result<String, Status> {
    String::from_utf8(b.to_vec())
        .map_err(|_| bad_field(format!("inputs[{i}]"), "INVALID_VALUE", "BYTES elements must be UTF-8 text"))
}

fn pb_term(urn: &str, year: &str, term: &str) -> Option<super::pb::SchoolTerm> {
    let t = match term.trim().to_ascii_lowercase().as_str() {
        "autumn" => super::pb::TermName::Autumn,
        "spring" => super::pb::TermName::Spring,
        "summer" => super::pb::TermName::Summer,
        _ => super::pb::TermName::Unspecified,
    };
    Some(super::pb::SchoolTerm { school_urn: urn.to_string(), academic_year: year.to_string(), term: t as i32 })
}

/// ScoreRecords field paths, rewritten as tensor positions: `pupils[3].record.sex` becomes
/// `sex[3]`, `pupils[3].prior_terms[1].record.sex` becomes `prior_sex[3][1]`.
fn tensor_path(field: &str) -> String {
    let rest = field.strip_prefix("pupils[").unwrap_or(field);
    let Some((i, rest)) = rest.split_once(']') else { return field.to_string() };
    let rest = rest.trim_start_matches('.');
    let (prefix, j, rest) = match rest.strip_prefix("prior_terms[").and_then(|r| r.split_once(']')) {
        Some((j, r)) => ("prior_", format!("[{j}]"), r.trim_start_matches('.')),
        None => ("", String::new(), rest),
    };
    let name = rest.strip_prefix("record.").or_else(|| rest.strip_prefix("school_term.")).unwrap_or(rest);
    format!("{prefix}{name}[{i}]{j}")
}

fn decode(req: &oip::ModelInferRequest) -> Result<Vec<CellPupil>, Status> {
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(bad_field(
            "raw_input_contents",
            "INVALID_VALUE",
            format!(
                "{} raw contents for {} inputs: send one per input",
                req.raw_input_contents.len(),
                req.inputs.len()
            ),
        ));
    }
    let by_name: HashMap<&str, usize> = req.inputs.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    if by_name.len() != req.inputs.len() {
        return Err(bad_field("inputs", "INVALID_VALUE", "each input may be sent once"));
    }
    let known = |n: &str| {
        let base = n.strip_prefix("prior_").unwrap_or(n);
        TERM_INPUTS.contains(&base) || Column::from_header(base).is_some_and(|c| c.name() == base)
    };
    if let Some((i, t)) = req.inputs.iter().enumerate().find(|(_, t)| !known(&t.name)) {
        return Err(bad_field(
            format!("inputs[{i}].name"),
            "INVALID_VALUE",
            format!("{:?} is not an input of riskid (see ModelMetadata)", t.name),
        ));
    }
    // N from the upn input; every [N] input must agree, every [N, P] too.
    let Some(&u) = by_name.get("upn") else {
        return Err(bad_field("inputs", "REQUIRED", "the upn input is required"));
    };
    let n = match req.inputs[u].shape.as_slice() {
        &[n] if (1..=MAX_INFER_PUPILS as i64).contains(&n) => n as usize,
        _ => {
            return Err(bad_field(
                format!("inputs[{u}].shape"),
                "OUT_OF_RANGE",
                format!("upn must have shape [N], N from 1 to {MAX_INFER_PUPILS}"),
            ));
        }
    };
    let p = match req.inputs.iter().enumerate().find(|(_, t)| t.name.starts_with("prior_")) {
        None => 0,
        Some((i, t)) => match t.shape.as_slice() {
            &[rows, p] if rows == n as i64 && (0..=MAX_PRIOR_TERMS as i64).contains(&p) => p as usize,
            _ => {
                return Err(bad_field(
                    format!("inputs[{i}].shape"),
                    "OUT_OF_RANGE",
                    format!("prior inputs must have shape [{n}, P], P from 0 to {MAX_PRIOR_TERMS}"),
                ));
            }
        },
    };
    if n.saturating_mul(1 + p) > MAX_INFER_TERMS {
        return Err(bad_field(
            "inputs",
            "OUT_OF_RANGE",
            format!("at most {MAX_INFER_TERMS} pupil-terms (pupils and their prior terms) per request"),
        ));
    }
    let read = |name: &str, kind: Kind, prior: bool| -> Result<Option<Vec<String>>, Status> {
        let Some(&i) = by_name.get(name) else { return Ok(None) };
        let t = &req.inputs[i];
        let shape: Vec<i64> = if prior { vec![n as i64, p as i64] } else { vec![n as i64] };
        if t.shape != shape {
            return Err(bad_field(
                format!("inputs[{i}].shape"),
                "INVALID_VALUE",
                format!("{name} must have shape {shape:?}"),
            ));
        }
        cells_of(i, t, raw.then(|| req.raw_input_contents[i].as_slice()), kind, if prior { n * p } else { n }).map(Some)
    };
    let mut now: Vec<Vec<String>> = Vec::with_capacity(COLUMN_COUNT + 3);
    let mut before: Vec<Vec<String>> = Vec::with_capacity(COLUMN_COUNT + 3);
    for name in TERM_INPUTS {
        now.push(
            read(name, Kind::Text, false)?
                .ok_or_else(|| bad_field("inputs", "REQUIRED", format!("the {name} input is required")))?,
        );
        let prior = read(&format!("prior_{name}"), Kind::Text, true)?;
        if p > 0 && prior.is_none() {
            return Err(bad_field("inputs", "REQUIRED", format!("prior_{name} is required with prior inputs")));
        }
        before.push(prior.unwrap_or_default());
    }
    for c in Column::ALL {
        let k = column_kind(c);
        // A column left out (an empty list here) is empty for every pupil: the validator then
        // reports the required ones. Nothing is allocated for it.
        now.push(read(c.name(), k, false)?.unwrap_or_default());
        before.push(read(&format!("prior_{}", c.name()), k, true)?.unwrap_or_default());
    }
    let mut pupils = Vec::with_capacity(n);
    #[allow(clippy::needless_range_loop)] // i indexes several columns at once
    for i in 0..n {
        let school_term = pb_term(&now[0][i], &now[1][i], &now[2][i]);
        let take = |col: &mut Vec<String>, k: usize| col.get_mut(k).map(std::mem::take).unwrap_or_default();
        let cells: [String; COLUMN_COUNT] = std::array::from_fn(|c| take(&mut now[3 + c], i));
        let cells = Some(cells);
        let (mut prior, mut prior_slots) = (Vec::new(), Vec::new());
        for j in 0..p {
            let k = i * p + j;
            if before[1][k].trim().is_empty() {
                continue;
            }
            let st = pb_term(&before[0][k], &before[1][k], &before[2][k]);
            prior.push((st, Some(std::array::from_fn(|c| take(&mut before[3 + c], k)))));
            prior_slots.push(j);
        }
        pupils.push(CellPupil { school_term, cells, prior, prior_slots });
    }
    Ok(pupils)
}

fn encode_bytes(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|s| s.len() + 4).sum());
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceApi {
    async fn server_live(
        &self,
        _: Request<oip::ServerLiveRequest>,
    ) -> Result<Response<oip::ServerLiveResponse>, Status> {
        Ok(Response::new(oip::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<oip::ServerReadyRequest>,
    ) -> Result<Response<oip::ServerReadyResponse>, Status> {
        // A model is always active (the bundled one until an analyst activates another).
        Ok(Response::new(oip::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<oip::ModelReadyRequest>,
    ) -> Result<Response<oip::ModelReadyResponse>, Status> {
        let oip::ModelReadyRequest { name, version } = request.into_inner();
        let active = self.app.active_model().model_id.clone();
        let ready = name == MODEL_NAME && (version.is_empty() || version == active);
        Ok(Response::new(oip::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<oip::ServerMetadataRequest>,
    ) -> Result<Response<oip::ServerMetadataResponse>, Status> {
        Ok(Response::new(oip::ServerMetadataResponse {
            name: "riskid".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<oip::ModelMetadataRequest>,
    ) -> Result<Response<oip::ModelMetadataResponse>, Status> {
        let oip::ModelMetadataRequest { name, version } = request.into_inner();
        let active = self.app.active_model().model_id.clone();
        check_model(&name, &version, &active)?;
        Ok(Response::new(metadata(active)))
    }

    async fn model_infer(
        &self,
        request: Request<oip::ModelInferRequest>,
    ) -> Result<Response<oip::ModelInferResponse>, Status> {
        let who = principal(&request)?;
        let req = request.into_inner();
        check_model(&req.model_name, &req.model_version, &self.app.active_model().model_id)?;
        let outputs = output_names();
        let wanted: Vec<usize> = if req.outputs.is_empty() {
            (0..outputs.len()).collect()
        } else {
            req.outputs
                .iter()
                .enumerate()
                .map(|(k, o)| {
                    outputs.iter().position(|(n, _)| *n == o.name).ok_or_else(|| {
                        bad_field(
                            format!("outputs[{k}].name"),
                            "INVALID_VALUE",
                            format!("{:?} is not an output of riskid", o.name),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let raw = !req.raw_input_contents.is_empty() || req.inputs.iter().all(|t| t.contents.is_none());
        let id = req.id.clone();
        // Decoding, validation and scoring run on the blocking pool under a scoring permit,
        // as for ScoreRecords.
        let (model_id, risks) = self
            .app
            .score_stateless(&who, move || {
                let pupils = decode(&req).map_err(|s| AppError::Edge(Box::new(s)))?;
                drop(req);
                check_cell_pupils(pupils).map_err(|e| match e {
                    AppError::BadFields { message, fields } => AppError::BadFields {
                        message,
                        fields: fields
                            .into_iter()
                            .map(|mut f| {
                                f.field = tensor_path(&f.field);
                                f
                            })
                            .collect(),
                    },
                    other => other,
                })
            })
            .await?;
        let n = risks.len() as i64;
        let mut out = oip::ModelInferResponse {
            model_name: MODEL_NAME.into(),
            model_version: model_id,
            id,
            ..Default::default()
        };
        for k in wanted {
            let (name, datatype) = &outputs[k];
            let mut contents = oip::InferTensorContents::default();
            let bytes: Vec<u8> = match k {
                0 => {
                    contents.fp64_contents = risks.iter().map(|r| r.any_adverse).collect();
                    contents.fp64_contents.iter().flat_map(|x| x.to_le_bytes()).collect()
                }
                1..=3 => {
                    contents.fp64_contents = risks.iter().map(|r| r.outcomes[k - 1].probability).collect();
                    contents.fp64_contents.iter().flat_map(|x| x.to_le_bytes()).collect()
                }
                4..=6 => {
                    let bands: Vec<&str> = risks.iter().map(|r| r.outcomes[k - 4].band.as_str()).collect();
                    contents.bytes_contents = bands.iter().map(|b| b.as_bytes().to_vec()).collect();
                    encode_bytes(&bands)
                }
                _ => {
                    contents.bool_contents = risks.iter().map(|r| r.statutory).collect();
                    contents.bool_contents.iter().map(|&b| u8::from(b)).collect()
                }
            };
            out.outputs.push(InferOutputTensor {
                name: name.clone(),
                datatype: datatype.to_string(),
                shape: vec![n],
                parameters: HashMap::new(),
                contents: (!raw).then_some(contents),
            });
            if raw {
                out.raw_output_contents.push(bytes);
            }
        }
        Ok(Response::new(out))
    }
}

fn check_model(name: &str, version: &str, active: &str) -> Result<(), Status> {
    if name != MODEL_NAME {
        return Err(AppError::not_found("MODEL_NOT_FOUND", format!("this server has one model, {MODEL_NAME:?}")).into());
    }
    if !version.is_empty() && version != active {
        // The caller's text is not echoed back: it may be anything, of any length.
        return Err(AppError::not_found(
            "MODEL_NOT_FOUND",
            format!("that version is not the active model ({active}); leave version empty for the active one"),
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_become_tensor_positions() {
        assert_eq!(tensor_path("pupils[3].record.sex"), "sex[3]");
        assert_eq!(tensor_path("pupils[3].prior_terms[1].record.sex"), "prior_sex[3][1]");
        assert_eq!(tensor_path("pupils[0].school_term.academic_year"), "academic_year[0]");
    }

    #[test]
    fn little_endian_integers_of_every_width() {
        assert_eq!(le_int(&[0xff], true), -1);
        assert_eq!(le_int(&[0xff], false), 255);
        assert_eq!(le_int(&200u64.to_le_bytes(), false), 200);
        assert_eq!(le_int(&(-3i32).to_le_bytes(), true), -3);
    }

    #[test]
    fn every_column_is_an_input() {
        let m = metadata("m".into());
        assert_eq!(m.inputs.len(), 2 * (COLUMN_COUNT + 3));
        assert_eq!(m.outputs.len(), 8);
    }
}
