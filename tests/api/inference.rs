//! The Open Inference Protocol v2 service scores exactly as ScoreRecords does.

use riskid::api::pb::{
    self,
    inference::{
        self as oip, grpc_inference_service_client::GrpcInferenceServiceClient, model_infer_request::InferInputTensor,
    },
    risk_service_client::RiskServiceClient,
};
use riskid::auth::Role;
use riskid::client::{Authed, Bearer};
use riskid::ingest::Column;
use tonic::Code;

use crate::helpers::*;

fn oip_client(ch: tonic::transport::Channel, key: &str) -> GrpcInferenceServiceClient<Authed> {
    GrpcInferenceServiceClient::with_interceptor(ch, Bearer::new(key))
}

fn bytes_raw(items: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn records(n: u64) -> Vec<pb::PupilRecord> {
    (0..n)
        .map(|i| pb::PupilRecord {
            upn: upn(i + 1),
            ncyear: ((i % 11) + 1).to_string(),
            sex: "F".into(),
            ethnicity: "WBRI".into(),
            fsm: Some(i % 3 == 0),
            eal: Some(false),
            sen: if i % 4 == 0 { "K" } else { "N" }.into(),
            sessions_possible: Some(140),
            sessions_authorised: Some(i % 20),
            sessions_unauthorised: Some(i % 13),
            absence_spells: Some((1 + i % 5).min(i % 20 + i % 13)),
            suspensions: Some(i % 2),
            suspension_sessions: Some(i % 2),
            permanent_exclusion: Some(false),
            behaviour_incidents: Some(i % 7),
            mh_referral: Some(i % 9 == 0),
            ..Default::default()
        })
        .collect()
}

#[tokio::test]
async fn liveness_readiness_and_metadata_need_no_key_but_inference_does() {
    let app = spawn_app().await;
    let mut anon = GrpcInferenceServiceClient::new(app.channel().await);
    assert!(anon.server_live(oip::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(anon.server_ready(oip::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = |name: &str, version: &str| oip::ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(anon.model_ready(ready("riskid", "")).await.unwrap().into_inner().ready);
    assert!(!anon.model_ready(ready("riskid", "no-such-version")).await.unwrap().into_inner().ready);
    assert!(!anon.model_ready(ready("other", "")).await.unwrap().into_inner().ready);
    let meta = anon.model_metadata(oip::ModelMetadataRequest { name: "riskid".into(), version: String::new() }).await;
    let meta = meta.unwrap().into_inner();
    let active = app.store.active_model().unwrap().unwrap().model_id;
    assert_eq!(meta.versions, vec![active]);
    for c in Column::ALL {
        assert!(meta.inputs.iter().any(|t| t.name == c.name() && t.shape == [-1]), "{}", c.name());
        assert!(meta.inputs.iter().any(|t| t.name == format!("prior_{}", c.name()) && t.shape == [-1, -1]));
    }
    assert!(meta.outputs.iter().any(|t| t.name == "p_persistent_absence" && t.datatype == "FP64"));
    let e = anon.model_infer(oip::ModelInferRequest { model_name: "riskid".into(), ..Default::default() }).await;
    assert_eq!(e.unwrap_err().code(), Code::Unauthenticated);
    // A role that may not score is refused.
    let mut lw = oip_client(app.channel().await, &app.key(Role::LinkWorker, &[100001]));
    let e = lw.model_infer(oip::ModelInferRequest { model_name: "riskid".into(), ..Default::default() }).await;
    assert_eq!(e.unwrap_err().code(), Code::PermissionDenied);
}

/// Tensors for `recs` at one school term: every column as BYTES, raw or typed.
fn request(recs: &[pb::PupilRecord], urn: &str, year: &str, term: &str, raw: bool) -> oip::ModelInferRequest {
    let n = recs.len();
    let cells: Vec<_> = recs.iter().map(riskid::api::record_cells).collect();
    let mut columns: Vec<(String, Vec<String>)> = vec![
        ("school_urn".into(), vec![urn.into(); n]),
        ("academic_year".into(), vec![year.into(); n]),
        ("term".into(), vec![term.into(); n]),
    ];
    for (j, c) in Column::ALL.iter().enumerate() {
        columns.push((c.name().into(), cells.iter().map(|r| r[j].clone()).collect()));
    }
    let mut req = oip::ModelInferRequest { model_name: "riskid".into(), id: "call-1".into(), ..Default::default() };
    for (name, values) in columns {
        let mut t = InferInputTensor { name, datatype: "BYTES".into(), shape: vec![n as i64], ..Default::default() };
        if raw {
            req.raw_input_contents.push(bytes_raw(&values));
        } else {
            t.contents = Some(oip::InferTensorContents {
                bytes_contents: values.into_iter().map(String::into_bytes).collect(),
                ..Default::default()
            });
        }
        req.inputs.push(t);
    }
    req
}

fn fp64(raw: &[u8]) -> Vec<f64> {
    raw.chunks(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

#[tokio::test]
async fn model_infer_gives_exactly_score_records_numbers() {
    let app = spawn_app().await;
    let key = app.key(Role::Service, &[]);
    let recs = records(300);
    let mut risk = RiskServiceClient::with_interceptor(app.channel().await, Bearer::new(&key));
    let t = term("2025/26", "spring");
    let urn = riskid::domain::Urn::new(100001).unwrap();
    let pupils = recs
        .iter()
        .map(|r| pb::PupilToScore { school_term: Some(st(urn, t)), record: Some(r.clone()), prior_terms: vec![] })
        .collect();
    let expected = risk.score_records(pb::ScoreRecordsRequest { pupils, ..Default::default() }).await.unwrap();
    let expected = expected.into_inner();

    let mut c = oip_client(app.channel().await, &key);
    // Raw contents in, raw contents out (what tritonclient does).
    let out = c.model_infer(request(&recs, "100001", "2025/26", "spring", true)).await.unwrap().into_inner();
    assert_eq!((out.id.as_str(), out.model_version.as_str()), ("call-1", expected.model_id.as_str()));
    let at = |name: &str| out.outputs.iter().position(|o| o.name == name).unwrap();
    assert_eq!(out.raw_output_contents.len(), out.outputs.len());
    let p_abs = fp64(&out.raw_output_contents[at("p_persistent_absence")]);
    let any = fp64(&out.raw_output_contents[at("any_adverse")]);
    for (i, r) in expected.risks.iter().enumerate() {
        assert_eq!(p_abs[i].to_bits(), r.outcomes[0].probability.to_bits(), "pupil {i}: the same number");
        assert_eq!(any[i].to_bits(), r.any_adverse.to_bits());
    }
    assert_eq!(out.outputs[at("band_suspension")].datatype, "BYTES");

    // Typed contents in, typed out, with integer counts and BOOL flags, and a chosen output.
    let mut typed = request(&recs, "100001", "2025/26", "spring", false);
    for t in typed.inputs.iter_mut() {
        if t.name == "sessions_possible" {
            t.datatype = "INT64".into();
            t.contents = Some(oip::InferTensorContents { int64_contents: vec![140; recs.len()], ..Default::default() });
        }
        if t.name == "fsm" {
            t.datatype = "BOOL".into();
            let v = recs.iter().map(|r| r.fsm.unwrap()).collect();
            t.contents = Some(oip::InferTensorContents { bool_contents: v, ..Default::default() });
        }
    }
    typed.outputs.push(oip::model_infer_request::InferRequestedOutputTensor {
        name: "p_mh_referral".into(),
        ..Default::default()
    });
    let out = c.model_infer(typed).await.unwrap().into_inner();
    assert_eq!(out.outputs.len(), 1);
    let got = &out.outputs[0].contents.as_ref().unwrap().fp64_contents;
    let want: Vec<f64> = expected.risks.iter().map(|r| r.outcomes[2].probability).collect();
    assert_eq!(got, &want);
}

#[tokio::test]
async fn bad_tensors_are_named() {
    let app = spawn_app().await;
    let mut c = oip_client(app.channel().await, &app.key(Role::Analyst, &[]));
    let mut recs = records(3);
    recs[1].sessions_possible = Some(999);
    let e = c.model_infer(request(&recs, "100001", "2025/26", "spring", true)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(bad_request_fields(&e).iter().any(|(f, _)| f == "sessions_possible[1]"), "{:?}", bad_request_fields(&e));
    // A wrong shape, an unknown input, a float count, an unknown model.
    let mut req = request(&records(3), "100001", "2025/26", "spring", true);
    req.inputs[5].shape = vec![2];
    assert_eq!(c.model_infer(req).await.unwrap_err().code(), Code::InvalidArgument);
    let mut req = request(&records(3), "100001", "2025/26", "spring", false);
    req.inputs[4].name = "postcode".into();
    let e = c.model_infer(req).await.unwrap_err();
    assert_eq!(bad_request_fields(&e)[0].0, "inputs[4].name");
    let mut req = request(&records(3), "100001", "2025/26", "spring", false);
    let t = req.inputs.iter_mut().find(|t| t.name == "suspensions").unwrap();
    t.datatype = "FP32".into();
    assert_eq!(c.model_infer(req).await.unwrap_err().code(), Code::InvalidArgument);
    let mut req = request(&records(3), "100001", "2025/26", "spring", false);
    req.model_name = "gpt".into();
    assert_eq!(c.model_infer(req).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn element_counts_are_checked_before_anything_is_converted() {
    let app = spawn_app().await;
    let mut c = oip_client(app.channel().await, &app.key(Role::Analyst, &[]));
    // Shape [3], but a million packed BOOLs: refused on the count, not turned into strings.
    let mut req = request(&records(3), "100001", "2025/26", "spring", true);
    let i = req.inputs.iter().position(|t| t.name == "fsm").unwrap();
    req.inputs[i].datatype = "BOOL".into();
    req.raw_input_contents[i] = vec![1u8; 1_000_000];
    let e = c.model_infer(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("holds 1000000 elements"), "{}", e.message());
    // More earlier terms than ScoreRecords allows.
    let mut req = request(&records(1), "100001", "2025/26", "spring", false);
    req.inputs.push(InferInputTensor {
        name: "prior_academic_year".into(),
        datatype: "BYTES".into(),
        shape: vec![1, 40],
        contents: Some(oip::InferTensorContents { bytes_contents: vec![vec![]; 40], ..Default::default() }),
        ..Default::default()
    });
    let e = c.model_infer(req).await.unwrap_err();
    assert!(e.message().contains("P from 0 to 39"), "{}", e.message());
}

#[tokio::test]
async fn an_error_in_a_prior_slot_names_that_slot() {
    let app = spawn_app().await;
    let mut c = oip_client(app.channel().await, &app.key(Role::Analyst, &[]));
    let recs = records(1);
    let mut req = request(&recs, "100001", "2025/26", "summer", false);
    // Three prior slots: 0 used, 1 empty, 2 used with a bad sex.
    let cells = riskid::api::record_cells(&recs[0]);
    let slot = |v: [&str; 3]| oip::InferTensorContents {
        bytes_contents: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    };
    let mut add = |name: &str, v: [&str; 3]| {
        req.inputs.push(InferInputTensor {
            name: format!("prior_{name}"),
            datatype: "BYTES".into(),
            shape: vec![1, 3],
            contents: Some(slot(v)),
            ..Default::default()
        })
    };
    add("school_urn", ["100001", "", "100001"]);
    add("academic_year", ["2025/26", "", "2024/25"]);
    add("term", ["spring", "", "summer"]);
    for (j, col) in Column::ALL.iter().enumerate() {
        let v = cells[j].as_str();
        let bad = if col.name() == "sex" { "Q" } else { v };
        add(col.name(), [v, "", bad]);
    }
    let e = c.model_infer(req).await.unwrap_err();
    assert!(bad_request_fields(&e).iter().any(|(f, _)| f == "prior_sex[0][2]"), "{:?}", bad_request_fields(&e));
}
