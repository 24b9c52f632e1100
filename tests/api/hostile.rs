//! A hostile school with one valid key: each case an outsider found against the first
//! release (issue 10) has a test here that failed there.

use std::time::Duration;

use prost::Message;
use riskid::api::pb::{
    self, cohort_service_client::CohortServiceClient, model_service_client::ModelServiceClient,
    risk_service_client::RiskServiceClient, submit_feed_request::Part,
};
use riskid::app::Limits;
use riskid::auth::Role;
use riskid::client::{Bearer, rejection_rows};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn part(p: Part) -> pb::SubmitFeedRequest {
    pb::SubmitFeedRequest { part: Some(p) }
}

fn records(records: Vec<pb::PupilRecord>) -> pb::SubmitFeedRequest {
    part(Part::Records(pb::RecordBatch { records }))
}

fn good_record(n: u64) -> pb::PupilRecord {
    pb::PupilRecord {
        upn: upn(n),
        ncyear: "7".into(),
        sex: "F".into(),
        ethnicity: "WBRI".into(),
        fsm: Some(false),
        eal: Some(false),
        sen: "N".into(),
        sessions_possible: Some(140),
        sessions_authorised: Some(0),
        sessions_unauthorised: Some(0),
        suspensions: Some(0),
        permanent_exclusion: Some(false),
        mh_referral: Some(false),
        ..Default::default()
    }
}

const SUBMIT: &str = "/riskid.v1.FeedService/SubmitFeed";
const SCORE: &str = "/riskid.v1.RiskService/ScoreRecords";

/// A SubmitFeedRequest holding one RecordBatch of `n` empty records, encoded by hand so the
/// test never holds millions of decoded records itself.
fn empty_records(n: usize) -> Vec<u8> {
    let batch = [0x0a_u8, 0x00].repeat(n);
    let mut msg = vec![0x1a];
    prost::encoding::encode_varint(batch.len() as u64, &mut msg);
    msg.extend(batch);
    msg
}

fn info(s: &tonic::Status, key: &str) -> Option<String> {
    s.get_details_error_info().and_then(|i| i.metadata.get(key).cloned())
}

#[tokio::test]
async fn millions_of_empty_records_are_refused_before_they_are_decoded() {
    let app = spawn_app().await;
    let key = app.key(Role::School, &[SCHOOL_A]);
    let mut c = app.feed(&key).await;
    let h = header(SCHOOL_A, term("2025/26", "autumn"));
    // 2,001 empty records fit in 4 KB but are one over the per-batch cap.
    let stream = vec![part(Part::Header(h.clone())), records(vec![pb::PupilRecord::default(); 2_001])];
    let err = c.submit_feed(tokio_stream::iter(stream)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 2000"), "{}", err.message());
    // 8,000,000 empty records (16 MB): over the message size limit, refused unread
    // (tonic's code for an oversized message is OUT_OF_RANGE).
    let err = riskid::client::raw_call(
        app.channel().await,
        &key,
        SUBMIT,
        vec![part(Part::Header(h.clone())).encode_to_vec(), empty_records(8_000_000)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
    // Many full batches: refused at the row limit, never accumulated past it.
    let batch = records((0..2_000).map(good_record).collect());
    let stream: Vec<_> = std::iter::once(part(Part::Header(h))).chain(std::iter::repeat_n(batch, 6)).collect();
    let err = c.submit_feed(tokio_stream::iter(stream)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.get_details_error_info().unwrap().reason, "FEED_TOO_MANY_ROWS");
    assert!(err.get_details_retry_info().is_none(), "retrying cannot help");
    assert_eq!(app.stored_rows(), 0);
}

#[tokio::test]
async fn score_records_caps_hold_before_decoding() {
    let app = spawn_app().await;
    let key = app.key(Role::Service, &[]);
    let mut c = RiskServiceClient::with_interceptor(app.channel().await, Bearer::new(&key));
    let empty =
        |priors: usize| pb::PupilToScore { prior_terms: vec![pb::PriorTerm::default(); priors], ..Default::default() };
    let err = c
        .score_records(pb::ScoreRecordsRequest { pupils: vec![empty(0); 1_501], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("pupils may hold at most 1500"), "{}", err.message());
    let err =
        c.score_records(pb::ScoreRecordsRequest { pupils: vec![empty(40)], ..Default::default() }).await.unwrap_err();
    assert!(err.message().contains("prior_terms"), "{}", err.message());
    // 7.9 M empty prior terms (16 MB): refused by size, not decoded.
    let pupil = [0x1a_u8, 0x00].repeat(7_900_000); // PupilToScore { prior_terms: [{}; 7.9 M] }
    let mut msg = vec![0x0a];
    prost::encoding::encode_varint(pupil.len() as u64, &mut msg);
    msg.extend(pupil);
    let err = riskid::client::raw_call(app.channel().await, &key, SCORE, vec![msg]).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
}

#[tokio::test]
async fn huge_counts_in_record_batches_do_not_wrap_on_decoding() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let h = header(SCHOOL_A, term("2025/26", "autumn"));
    let mut wraps = good_record(1);
    wraps.sessions_unauthorised = Some((1 << 32) + 1); // decoded as 1 by a uint32 field
    let mut huge = good_record(2);
    huge.sessions_authorised = Some(u64::MAX);
    let stream = vec![part(Part::Header(h)), records(vec![wraps, huge])];
    let err = c.submit_feed(tokio_stream::iter(stream)).await.unwrap_err();
    let rows: Vec<_> = rejection_rows(&err).into_iter().map(|(l, c, code, _)| (l, c, code)).collect();
    assert_eq!(
        rows,
        vec![
            (2, "sessions_unauthorised".to_string(), "out_of_range".to_string()),
            (3, "sessions_authorised".into(), "out_of_range".into())
        ]
    );
}

#[tokio::test]
async fn a_huge_count_in_a_csv_never_reaches_a_score_or_a_cohort() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let csv = format!(
        "{}\n{},7,F,WBRI,N,N,N,,,,140,99999999999999999999,1,,0,,N,,,,,,,,,N\n",
        riskid::ingest::contract_header(),
        upn(1)
    );
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), csv.as_bytes()).await.unwrap_err();
    let rows: Vec<_> = rejection_rows(&err).into_iter().map(|(l, c, code, _)| (l, c, code)).collect();
    assert_eq!(rows, vec![(2, "sessions_authorised".to_string(), "out_of_range".to_string())]);
    assert_eq!(app.stored_rows(), 0);
}

/// A feed with `n` rows, each with one error.
fn feed_with_errors(n: usize) -> Vec<u8> {
    let mut s = riskid::ingest::contract_header();
    for i in 0..n {
        s.push_str(&format!("\n{},99,F,WBRI,N,N,N,,,,140,0,0,,0,,N,,,,,,,,,N", upn(i as u64)));
    }
    s.into_bytes()
}

#[tokio::test]
async fn five_thousand_errors_reach_a_client_with_grpcio_default_limits() {
    let app = spawn_app().await;
    let key = app.key(Role::School, &[SCHOOL_A]);
    // grpcio's defaults: 4 MiB messages, 8 KB of metadata.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .http2_max_header_list_size(8 << 10)
        .connect()
        .await
        .unwrap();
    let mut c = pb::feed_service_client::FeedServiceClient::with_interceptor(ch, Bearer::new(&key))
        .max_decoding_message_size(4 << 20);
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), &feed_with_errors(5_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(info(&err, "error_count").as_deref(), Some("5000"));
    let listed: usize = info(&err, "listed_count").unwrap().parse().unwrap();
    let first = rejection_rows(&err);
    assert_eq!(first.len(), listed);
    assert!(listed >= 20, "the trailer lists the first violations: {listed}");
    assert_eq!(first[0].0, 2);
    // The rest by report id, to the same key only.
    let report_id = info(&err, "report_id").unwrap();
    let report =
        c.get_feed_report(pb::GetFeedReportRequest { report_id: report_id.clone() }).await.unwrap().into_inner();
    assert_eq!(report.error_count, 5_000);
    assert_eq!(report.errors.len(), 1_000);
    assert_eq!(report.errors.iter().map(|v| v.line).collect::<Vec<_>>(), (2..1002).collect::<Vec<_>>());
    let mut other = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let denied = other.get_feed_report(pb::GetFeedReportRequest { report_id }).await.unwrap_err();
    assert_eq!(denied.code(), Code::NotFound);
    assert_eq!(app.stored_rows(), 0);
}

#[tokio::test]
async fn one_huge_bad_cell_or_a_feed_of_control_characters_gives_a_small_rejection() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let big = "\u{7}".repeat(1 << 20);
    let csv =
        format!("{}\n{},{big},F,WBRI,N,N,N,,,,140,0,0,,0,,N,,,,,,,,,N\n", riskid::ingest::contract_header(), upn(1));
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), csv.as_bytes()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.details().len() < 8 << 10, "details are {} bytes", err.details().len());
    let rows = rejection_rows(&err);
    assert_eq!(rows[0].1, "ncyear");
    assert!(!rows[0].3.contains('\u{7}'));
    // Megabytes of control characters: every line is a fault, the trailer stays small.
    let junk = vec![b'\x01'; 600 << 10].chunks(64).flat_map(|c| [c, b"\n"].concat()).collect::<Vec<u8>>();
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), &junk).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.details().len() < 8 << 10);
}

#[tokio::test]
async fn idle_uploads_hold_no_ingest_slot_and_end_by_themselves() {
    let limits = Limits { ingest_idle_timeout: Duration::from_millis(400), ..Limits::default() };
    let app = spawn_app_with(limits).await;
    // Four schools open uploads, send the header, then nothing.
    let mut idle = Vec::new();
    for i in 0..4u32 {
        let urn = 300_001 + i;
        let mut c = app.feed(&app.key(Role::School, &[urn])).await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(part(Part::Header(header(urn, term("2025/26", "autumn"))))).await.unwrap();
        let call = tokio::spawn(async move { c.submit_feed(ReceiverStream::new(rx)).await });
        idle.push((tx, call));
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while app.app.open_uploads() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the four uploads are open");
    // A fifth school submits meanwhile.
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let ok = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), VALID).await.unwrap();
    assert_eq!(ok.outcome(), pb::SubmitOutcome::Accepted);
    // The idle ones are ended, and store nothing.
    for (_tx, call) in idle {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    }
    assert_eq!(app.stored_rows(), 10);
    assert_eq!(app.app.open_uploads(), 0);
}

#[tokio::test]
async fn one_key_cannot_hold_every_upload_slot() {
    let app = spawn_app().await;
    let key = app.key(Role::School, &[SCHOOL_A]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = app.feed(&key).await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(part(Part::Header(header(SCHOOL_A, term("2025/26", "autumn"))))).await.unwrap();
        held.push((tx, tokio::spawn(async move { c.submit_feed(ReceiverStream::new(rx)).await })));
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while app.app.open_uploads() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("two uploads open");
    let mut c = app.feed(&key).await;
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), VALID).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.get_details_retry_info().is_some(), "overload says when to retry");
    // Another school's key is not affected.
    let mut b = app.feed(&app.key(Role::School, &[SCHOOL_B])).await;
    assert!(submit(&mut b, header(SCHOOL_B, term("2025/26", "autumn")), VALID).await.is_ok());
    drop(held);
}

#[tokio::test]
async fn content_length_is_exact_for_csv_and_records() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let mut h = header(SCHOOL_A, term("2025/26", "autumn"));
    h.content_length = VALID.len() as u64 - 10;
    let err = submit(&mut c, h.clone(), VALID).await.unwrap_err();
    assert!(err.message().contains("sent more than"), "{}", err.message());
    let batch = pb::RecordBatch { records: vec![good_record(1)] };
    h.content_length = prost::Message::encoded_len(&batch) as u64 + 1;
    let stream = vec![part(Part::Header(h.clone())), part(Part::Records(batch.clone()))];
    let err = c.submit_feed(tokio_stream::iter(stream)).await.unwrap_err();
    assert!(err.message().contains("ended after"), "{}", err.message());
    h.content_length = prost::Message::encoded_len(&batch) as u64;
    let stream = vec![part(Part::Header(h)), part(Part::Records(batch))];
    assert!(c.submit_feed(tokio_stream::iter(stream)).await.is_ok());
}

#[tokio::test]
async fn untrusted_strings_are_bounded_at_the_api() {
    let app = spawn_app().await;
    let analyst = app.key(Role::Analyst, &[]);
    let mut m = ModelServiceClient::with_interceptor(app.channel().await, Bearer::new(&analyst));
    let escapes = format!("m{}", "\u{1b}[31m".repeat(10));
    let err = m.train_model(pb::TrainModelRequest { model_id: escapes, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.get_details_bad_request().is_some());
    let big = "a".repeat(200 << 10);
    let err = m.train_model(pb::TrainModelRequest { model_id: big, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "over the 64 KiB limit of small requests");
    // An existing model id is refused before training, not silently returned.
    let existing = app.store.active_model().unwrap().unwrap().model_id;
    let err = m.train_model(pb::TrainModelRequest { model_id: existing, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("already exists"));
    // Request ids.
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let mut h = header(SCHOOL_A, term("2025/26", "autumn"));
    h.request_id = "x\u{1b}y".into();
    assert_eq!(submit(&mut c, h, VALID).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn cohort_weights_must_be_finite_and_bounded() {
    let app = spawn_app().await;
    let mut c = CohortServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Analyst, &[])));
    for weights in [vec![1e308, 1e308, 1.0], vec![f64::NAN, 1.0, 1.0], vec![-1.0, 1.0, 1.0], vec![0.0, 0.0, 0.0]] {
        let req = pb::ProposeCohortRequest {
            school_term: Some(st(riskid::domain::Urn::new(SCHOOL_A).unwrap(), term("2025/26", "autumn"))),
            capacity: 5,
            policy: Some(pb::Policy { kind: pb::PolicyKind::Weighted as i32, weights: weights.clone() }),
            ..Default::default()
        };
        let err = c.propose_cohort(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{weights:?}: {}", err.message());
    }
}

#[tokio::test]
async fn a_feed_over_the_row_limit_is_a_resource_limit() {
    let app = spawn_app_with(Limits { max_feed_rows: 100, ..Limits::default() }).await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), &valid_csv(101, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.get_details_error_info().unwrap().reason, "FEED_TOO_MANY_ROWS");
    assert!(submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), &valid_csv(100, 0)).await.is_ok());
}

#[tokio::test]
async fn trickles_cannot_hold_an_upload_open() {
    // Found in review: empty parts reset the idle timer, and the header had no timeout.
    let limits = Limits {
        ingest_idle_timeout: Duration::from_millis(300),
        max_upload_time: Duration::from_millis(900),
        ..Limits::default()
    };
    let app = spawn_app_with(limits).await;
    let key = app.key(Role::School, &[SCHOOL_A]);
    let h = header(SCHOOL_A, term("2025/26", "autumn"));
    // An empty chunk is refused outright.
    let mut c = app.feed(&key).await;
    let stream = vec![part(Part::Header(h.clone())), part(Part::CsvChunk(Vec::new()))];
    let err = c.submit_feed(tokio_stream::iter(stream)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("empty"), "{}", err.message());
    // A stream that never sends its header is ended.
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitFeedRequest>(1);
    let err = c.submit_feed(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    // A trickle of small chunks, each inside the idle timeout, meets the total deadline.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitFeedRequest>(1);
    let call = tokio::spawn(async move { c.submit_feed(ReceiverStream::new(rx)).await });
    tx.send(part(Part::Header(h))).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            if tx.send(part(Part::CsvChunk(b"u".to_vec()))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.message().contains("longer than"), "{}", err.message());
    trickle.abort();
    assert_eq!(app.stored_rows(), 0);
}

#[tokio::test]
async fn a_callers_request_id_is_kept_when_it_is_a_plain_token() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let call = |rid: &'static str| {
        let mut req = tonic::Request::new(pb::ListSubmissionsRequest::default());
        req.metadata_mut().insert("x-request-id", rid.parse().unwrap());
        req
    };
    let kept = c.list_submissions(call("batch-7:upload-42")).await.unwrap();
    assert_eq!(kept.metadata().get("x-request-id").unwrap(), "batch-7:upload-42");
    // Not a plain token, or holding a UPN (it would reach the logs): replaced by a fresh id.
    for bad in ["not a token", "retry-B801200005001-2"] {
        let replaced = c.list_submissions(call(bad)).await.unwrap();
        let id = replaced.metadata().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "a fresh UUID");
    }
}
