//! The API's conventions, as a client that did not write riskid meets them: error details
//! that reflection can decode, compression, request ids, page tokens, views and message
//! sizes within a default client's limits.

use prost::Message;
use riskid::api::pb::{
    self, cohort_service_client::CohortServiceClient, model_service_client::ModelServiceClient,
    risk_service_client::RiskServiceClient,
};
use riskid::auth::Role;
use riskid::client::{Authed, Bearer};
use tonic::Code;
use tonic::codec::CompressionEncoding;

use crate::helpers::*;

fn risks(ch: tonic::transport::Channel, key: &str) -> RiskServiceClient<Authed> {
    RiskServiceClient::with_interceptor(ch, Bearer::new(key))
}

/// The default receive limit of grpcio, grpc-java, grpc-go and grpc-js.
const DEFAULT_CLIENT_LIMIT: usize = 4 << 20;

#[tokio::test]
async fn reflection_serves_the_error_details_and_the_inference_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut c = ServerReflectionClient::new(app.channel().await);
    for symbol in
        ["google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.RetryInfo", "inference.GRPCInferenceService"]
    {
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut resp = c.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let msg = resp.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(f)) = msg.message_response else {
            panic!("{symbol} is not served: {:?}", msg.message_response)
        };
        let file = prost_types::FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice()).unwrap();
        let short = symbol.rsplit('.').next().unwrap();
        assert!(
            file.message_type.iter().any(|m| m.name() == short) || file.service.iter().any(|s| s.name() == short),
            "{symbol} not in {}",
            file.name()
        );
    }
}

#[tokio::test]
async fn every_error_has_a_reason_and_invalid_fields_are_named() {
    let app = spawn_app().await;
    let b = submit_world(&app, 1).await;
    let urn = b.world.schools[0].urn;
    let lw_key = app.key(Role::LinkWorker, &[urn.get()]);
    let mut lw = CohortServiceClient::with_interceptor(app.channel().await, Bearer::new(&lw_key));
    let c = lw
        .propose_cohort(pb::ProposeCohortRequest {
            school_term: Some(st(urn, b.latest)),
            capacity: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // A bad reason code names reason_code.
    let remove = pb::RecordDecisionRequest {
        cohort_id: c.cohort_id.clone(),
        upn: c.members[0].upn.clone(),
        decision: pb::DecisionKind::Remove as i32,
        reason_code: "because".into(),
        ..Default::default()
    };
    let e = lw.record_decision(remove).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&e), "INVALID_FIELD");
    assert_eq!(bad_request_fields(&e), vec![("reason_code".into(), "UNKNOWN_REASON_CODE".into())]);
    // A missing cohort: NOT_FOUND with a reason.
    let e = lw.get_cohort(pb::GetCohortRequest { cohort_id: "999999".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!((e.code(), error_reason(&e).as_str()), (Code::NotFound, "COHORT_NOT_FOUND"));
    let e = lw.get_cohort(pb::GetCohortRequest::default()).await.unwrap_err();
    assert_eq!(bad_request_fields(&e), vec![("cohort_id".into(), "REQUIRED".into())]);
    // Review started: FAILED_PRECONDITION with a PreconditionFailure.
    lw.record_decision(pb::RecordDecisionRequest {
        cohort_id: c.cohort_id.clone(),
        upn: c.members[0].upn.clone(),
        decision: pb::DecisionKind::Confirm as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let e = lw
        .propose_cohort(pb::ProposeCohortRequest {
            school_term: Some(st(urn, b.latest)),
            capacity: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), error_reason(&e).as_str()), (Code::FailedPrecondition, "REVIEW_STARTED"));
    {
        use tonic_types::StatusExt;
        assert_eq!(e.get_details_precondition_failure().unwrap().violations[0].r#type, "REVIEW_STARTED");
    }

    // force without a reason, and a model id that is not a token.
    let mut models =
        ModelServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Analyst, &[])));
    let bundled = app.store.active_model().unwrap().unwrap().model_id;
    let e = models
        .activate_model(pb::ActivateModelRequest { model_id: bundled, force: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&e), vec![("reason".into(), "REQUIRED".into())]);
    let e =
        models.get_model(pb::GetModelRequest { model_id: "two words".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&e)[0].0, "model_id");

    // Access: no key, a wrong role.
    let mut anon = CohortServiceClient::new(app.channel().await);
    let e = anon.get_cohort(pb::GetCohortRequest { cohort_id: c.cohort_id.clone(), ..Default::default() }).await;
    assert_eq!(error_reason(&e.unwrap_err()), "API_KEY_MISSING");
    let mut svc = CohortServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Service, &[])));
    let e = svc.get_cohort(pb::GetCohortRequest { cohort_id: c.cohort_id.clone(), ..Default::default() }).await;
    let e = e.unwrap_err();
    assert_eq!((e.code(), error_reason(&e).as_str()), (Code::PermissionDenied, "ROLE_NOT_ALLOWED"));

    // A status tonic makes itself (a message over the limit) still carries a reason.
    let huge = pb::RecordDecisionRequest { note: "x".repeat(100_000), ..Default::default() };
    let e = lw.record_decision(huge).await.unwrap_err();
    assert_eq!((e.code(), error_reason(&e).as_str()), (Code::OutOfRange, "MESSAGE_TOO_LARGE"), "{e:?}");
}

#[test]
fn the_readme_lists_every_error_reason() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (reason, code, _) in riskid::api::ERROR_REASONS {
        let row = format!("| `{reason}` | {code:?} |");
        assert!(readme.contains(&row), "README's error table lacks {row}");
    }
}

#[tokio::test]
async fn gzip_and_zstd_both_ways() {
    let app = spawn_app().await;
    let b = submit_world(&app, 1).await;
    let key = app.key(Role::Analyst, &[]);
    for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut c = risks(app.channel().await, &key).send_compressed(enc).accept_compressed(enc);
        let req = pb::ListSchoolRisksRequest {
            school_term: Some(st(b.world.schools[0].urn, b.latest)),
            ..Default::default()
        };
        let resp = c.list_school_risks(req).await.unwrap();
        let sent = resp.metadata().get("grpc-encoding").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(sent.as_deref(), Some(if enc == CompressionEncoding::Gzip { "gzip" } else { "zstd" }));
        assert!(!resp.into_inner().risks.is_empty());
    }
}

#[tokio::test]
async fn a_callers_request_id_is_kept_and_returned() {
    let app = spawn_app().await;
    let mut c = risks(app.channel().await, &app.key(Role::Analyst, &[]));
    let mut req = tonic::Request::new(pb::GetPupilRiskRequest { upn: upn(1), ..Default::default() });
    req.metadata_mut().insert("x-request-id", "batch-7.call-3".parse().unwrap());
    let e = c.get_pupil_risk(req).await.unwrap_err();
    assert_eq!(e.metadata().get("x-request-id").unwrap(), "batch-7.call-3", "kept, even on an error");
    // Without one, or with one that is not a plain token, a fresh id is returned.
    let e = c.get_pupil_risk(pb::GetPupilRiskRequest { upn: upn(1), ..Default::default() }).await.unwrap_err();
    let fresh = e.metadata().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 36, "a UUID: {fresh}");
    let mut req = tonic::Request::new(pb::GetPupilRiskRequest { upn: upn(1), ..Default::default() });
    req.metadata_mut().insert("x-request-id", "a b".parse().unwrap());
    let e = c.get_pupil_risk(req).await.unwrap_err();
    assert_ne!(e.metadata().get("x-request-id").unwrap(), "a b");
}

#[tokio::test]
async fn page_tokens_are_opaque_bound_to_the_query_and_never_overflow() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let mut c = risks(app.channel().await, &app.key(Role::Analyst, &[]));
    let query = |urn, token: &str, size: i32| pb::ListSchoolRisksRequest {
        school_term: Some(st(urn, b.latest)),
        page_size: size,
        page_token: token.into(),
        view: pb::RiskView::Basic as i32,
        ..Default::default()
    };
    // Paging to the end sees every pupil once.
    let (mut token, mut seen, mut totals) = (String::new(), Vec::new(), Vec::new());
    loop {
        let page = c.list_school_risks(query(b.world.schools[0].urn, &token, 7)).await.unwrap().into_inner();
        totals.push(page.total_size);
        assert!(page.risks.iter().all(|r| r.outcomes.iter().all(|o| o.reasons.is_empty())), "BASIC has no reasons");
        seen.extend(page.risks.into_iter().map(|r| r.upn));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(page.next_page_token.parse::<u64>().is_err(), "opaque, not an offset");
        token = page.next_page_token;
    }
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    let total = totals[0] as usize;
    assert!(totals.iter().all(|t| *t as usize == total) && totals.len() > 2, "several pages, one total");
    assert_eq!((seen.len(), distinct.len()), (total, total));

    let first = c.list_school_risks(query(b.world.schools[0].urn, "", 7)).await.unwrap().into_inner().next_page_token;
    for (urn, token, size) in [
        (b.world.schools[1].urn, first.as_str(), 7),         // another query's token
        (b.world.schools[0].urn, "10", 7),                   // a plain offset
        (b.world.schools[0].urn, "18446744073709551615", 7), // u64::MAX
        (b.world.schools[0].urn, &first[..first.len() - 2], 7), // cut short
        (b.world.schools[0].urn, "", -1),                    // a negative page size
    ] {
        let e = c.list_school_risks(query(urn, token, size)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{token:?} {size}");
        let field = if size < 0 { "page_size" } else { "page_token" };
        assert_eq!(bad_request_fields(&e)[0].0, field);
    }
    // Another key's token is foreign too.
    let mut other = risks(app.channel().await, &app.key(Role::Analyst, &[]));
    let e = other.list_school_risks(query(b.world.schools[0].urn, &first, 7)).await.unwrap_err();
    assert_eq!(bad_request_fields(&e)[0], ("page_token".into(), "INVALID_PAGE_TOKEN".into()));
    assert_eq!(error_reason(&e), "INVALID_PAGE_TOKEN");
}

#[tokio::test]
async fn model_views_fit_default_clients() {
    let app = spawn_app().await;
    let mut c = ModelServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Analyst, &[])));
    let listed = c.list_models(pb::ListModelsRequest::default()).await.unwrap().into_inner();
    let m = &listed.models[0];
    assert!(m.card.is_empty() && m.artifact.is_empty(), "BASIC by default in lists");
    assert!(m.encoded_len() < 8 << 10, "a basic model is small: {} bytes", m.encoded_len());
    assert_eq!(m.evaluations.len(), 3);
    assert!(m.create_time.is_some() && m.training.is_some());
    let full = c.get_model(pb::GetModelRequest { model_id: m.model_id.clone(), ..Default::default() }).await;
    let full = full.unwrap().into_inner();
    assert!(!full.card.is_empty() && !full.evaluations[0].fairness.is_empty());
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&full.artifact)), full.artifact_sha256, "the artifact as stored");
    assert!(full.encoded_len() < DEFAULT_CLIENT_LIMIT / 8, "{} bytes", full.encoded_len());
    let page = c
        .list_models(pb::ListModelsRequest { view: pb::ModelView::Full as i32, page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(page.models.len() <= 20 && !page.models[0].artifact.is_empty());
}

/// A pupil whose record raises every domain, with an earlier term: the largest reply.
fn worst_case(n: u64, t: riskid::domain::Term, urn: riskid::domain::Urn) -> pb::PupilToScore {
    let rec = pb::PupilRecord {
        upn: upn(n),
        ncyear: "9".into(),
        sex: "M".into(),
        ethnicity: "WBRI".into(),
        fsm: Some(true),
        eal: Some(true),
        sen: "E".into(),
        cin: "CIN".into(),
        young_carer: Some(true),
        school_moves: Some(20),
        sessions_possible: Some(140),
        sessions_authorised: Some(40),
        sessions_unauthorised: Some(40),
        absence_spells: Some(30),
        suspensions: Some(5),
        suspension_sessions: Some(10),
        permanent_exclusion: Some(false),
        behaviour_incidents: Some(200),
        attainment_english: "below".into(),
        attainment_maths: "below".into(),
        sdq_emotional: Some(10),
        sdq_conduct: Some(10),
        sdq_hyperactivity: Some(10),
        sdq_peer: Some(10),
        sdq_prosocial: Some(0),
        mh_referral: Some(true),
    };
    let earlier = pb::PupilRecord { sessions_unauthorised: Some(2), behaviour_incidents: Some(3), ..rec.clone() };
    pb::PupilToScore {
        school_term: Some(st(urn, t)),
        record: Some(rec),
        prior_terms: vec![pb::PriorTerm { school_term: Some(st(urn, t.prev())), record: Some(earlier) }],
    }
}

#[tokio::test]
async fn score_records_at_its_limit_fits_a_default_client() {
    let app = spawn_app().await;
    let mut c = risks(app.channel().await, &app.key(Role::Service, &[]))
        .max_decoding_message_size(DEFAULT_CLIENT_LIMIT)
        .max_encoding_message_size(DEFAULT_CLIENT_LIMIT);
    let (urn, t) = (riskid::domain::Urn::new(100001).unwrap(), term("2025/26", "spring"));
    let n = riskid::api::codec::MAX_SCORE_PUPILS as u64;
    let pupils: Vec<_> = (0..n).map(|i| worst_case(i + 1, t, urn)).collect();
    let out = c.score_records(pb::ScoreRecordsRequest { pupils, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(out.risks.len(), n as usize);
    assert!(out.risks[0].outcomes.iter().all(|o| !o.reasons.is_empty()), "the FULL view, with reasons");
    println!("ScoreRecords reply at {n} worst-case pupils: {} bytes", out.encoded_len());
}
