//! FeedService: the contract's fixtures, access by role, supersede, idempotency, bad streams.

use riskid::api::pb::{self, submit_feed_request::Part};
use riskid::app::Limits;
use riskid::auth::Role;
use riskid::client::rejection_rows;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn valid_fixture_accepted_with_its_two_warnings() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let r = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), VALID).await.unwrap();
    assert_eq!(r.outcome(), pb::SubmitOutcome::Accepted);
    let s = r.submission.unwrap();
    assert_eq!(s.row_count, 10);
    let w: Vec<_> = s.warnings.iter().map(|w| (w.line, w.column.as_str(), w.code.as_str())).collect();
    assert_eq!(w, vec![(8, "sessions_possible", "few_sessions"), (9, "cin", "statutory_cin")]);
    assert_eq!(app.stored_rows(), 10);
}

#[tokio::test]
async fn invalid_fixture_rejected_whole_with_every_fault() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let status = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), INVALID).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let rows: Vec<(u64, String)> = rejection_rows(&status).into_iter().map(|(l, c, _, _)| (l, c)).collect();
    let expected = [
        (2, "upn"),
        (3, "ncyear"),
        (4, "ethnicity"),
        (5, "sessions_unauthorised"),
        (6, "sen"),
        (7, "sessions_possible"),
        (9, "upn"),
        (10, "fsm"),
        (11, "sdq_emotional"),
    ];
    assert_eq!(rows, expected.map(|(l, c)| (l, c.to_string())).to_vec());
    assert_eq!(app.stored_rows(), 0, "nothing of a rejected feed is stored");
    let list = c.list_submissions(pb::ListSubmissionsRequest::default()).await.unwrap().into_inner();
    assert!(list.submissions.is_empty());
}

#[tokio::test]
async fn submitting_is_for_school_keys_on_their_own_schools_only() {
    let app = spawn_app().await;
    let h = header(SCHOOL_A, term("2025/26", "autumn"));
    for (role, schools) in [
        (Role::School, &[SCHOOL_B][..]),
        (Role::Admin, &[]),
        (Role::Analyst, &[]),
        (Role::LinkWorker, &[SCHOOL_A]),
        (Role::Service, &[]),
    ] {
        let mut c = app.feed(&app.key(role, schools)).await;
        let err = submit(&mut c, h.clone(), VALID).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role} on {schools:?}");
    }
    for key in ["", "rk_0000", "not a key at all"] {
        let mut c = app.feed(key).await;
        assert_eq!(submit(&mut c, h.clone(), VALID).await.unwrap_err().code(), Code::Unauthenticated);
    }
    let mut anon = pb::feed_service_client::FeedServiceClient::new(app.channel().await);
    let err = anon.list_submissions(pb::ListSubmissionsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(app.stored_rows(), 0);
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let app = spawn_app().await;
    let key = app.key(Role::School, &[SCHOOL_A]);
    let id = app.store.list_keys().unwrap()[0].id;
    assert!(app.store.revoke_key(id, 1, "operator:test").unwrap());
    let mut c = app.feed(&key).await;
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), VALID).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn reading_submissions_by_role() {
    let app = spawn_app().await;
    let mut a = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let mut b = app.feed(&app.key(Role::School, &[SCHOOL_B])).await;
    let sa = submit(&mut a, header(SCHOOL_A, term("2025/26", "autumn")), VALID).await.unwrap().submission.unwrap();
    submit(&mut b, header(SCHOOL_B, term("2025/26", "autumn")), &valid_csv(5, 0)).await.unwrap();
    let get = |id: &str| pb::GetSubmissionRequest { submission_id: id.to_string() };
    let all = pb::ListSubmissionsRequest::default();

    for role in [Role::Admin, Role::Analyst] {
        let mut c = app.feed(&app.key(role, &[])).await;
        assert_eq!(c.list_submissions(all.clone()).await.unwrap().into_inner().submissions.len(), 2);
        assert_eq!(c.get_submission(get(&sa.submission_id)).await.unwrap().into_inner().warnings.len(), 2);
    }
    // A school sees only its own; another school's submission is "not found".
    assert_eq!(b.list_submissions(all.clone()).await.unwrap().into_inner().submissions.len(), 1);
    assert_eq!(b.get_submission(get(&sa.submission_id)).await.unwrap_err().code(), Code::NotFound);
    let other = pb::ListSubmissionsRequest { school_urn: SCHOOL_A.to_string(), ..Default::default() };
    assert_eq!(b.list_submissions(other).await.unwrap_err().code(), Code::PermissionDenied);
    // A link worker sees counts for assigned schools, not the warning lines.
    let mut lw = app.feed(&app.key(Role::LinkWorker, &[SCHOOL_A])).await;
    let seen = lw.get_submission(get(&sa.submission_id)).await.unwrap().into_inner();
    assert_eq!((seen.warning_count, seen.warnings.len()), (2, 0));
    assert_eq!(lw.list_submissions(all.clone()).await.unwrap().into_inner().submissions.len(), 1);
    let mut svc = app.feed(&app.key(Role::Service, &[])).await;
    assert_eq!(svc.list_submissions(all).await.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn resubmission_supersedes_and_identical_content_is_a_no_op() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let h = header(SCHOOL_A, term("2025/26", "spring"));
    let first = submit(&mut c, h.clone(), &valid_csv(30, 0)).await.unwrap().submission.unwrap();
    let again = submit(&mut c, h.clone(), &valid_csv(30, 0)).await.unwrap();
    assert_eq!(again.outcome(), pb::SubmitOutcome::Unchanged);
    assert_eq!(again.submission.unwrap().submission_id, first.submission_id);

    let second = submit(&mut c, h.clone(), &valid_csv(20, 1)).await.unwrap();
    assert_eq!(second.outcome(), pb::SubmitOutcome::Accepted);
    let second = second.submission.unwrap();
    assert_eq!(second.supersedes_submission_id, first.submission_id);
    assert_eq!(app.stored_rows(), 20, "only the current submission's rows count");

    let old = c
        .get_submission(pb::GetSubmissionRequest { submission_id: first.submission_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.state(), pb::SubmissionState::Superseded);
    assert_eq!(old.superseded_by_submission_id, second.submission_id);
    let current = c.list_submissions(pb::ListSubmissionsRequest::default()).await.unwrap().into_inner();
    assert_eq!(current.submissions.len(), 1);
    let everything = pb::ListSubmissionsRequest { include_superseded: true, ..Default::default() };
    assert_eq!(c.list_submissions(everything).await.unwrap().into_inner().submissions.len(), 2);
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_result() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let h = pb::SubmissionHeader { request_id: "upload-7".into(), ..header(SCHOOL_A, term("2025/26", "autumn")) };
    let first = submit(&mut c, h.clone(), &valid_csv(10, 0)).await.unwrap();
    assert_eq!(first.outcome(), pb::SubmitOutcome::Accepted);
    // A retry of the same request returns the first result.
    let retry = submit(&mut c, h.clone(), &valid_csv(10, 0)).await.unwrap();
    assert_eq!(retry, first);
    // The same id with other content, or for another term, is refused: it is not a retry.
    let other = submit(&mut c, h.clone(), &valid_csv(10, 3)).await.unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument);
    assert!(other.message().contains("already used"), "{}", other.message());
    let spring = pb::SubmissionHeader { request_id: "upload-7".into(), ..header(SCHOOL_A, term("2025/26", "spring")) };
    assert_eq!(submit(&mut c, spring, &valid_csv(10, 0)).await.unwrap_err().code(), Code::InvalidArgument);
    let all = riskid::storage::SubmissionFilter { include_superseded: true, limit: 10, ..Default::default() };
    assert_eq!(app.store.list_submissions(&all).unwrap().len(), 1, "the retries stored nothing");
}

#[tokio::test]
async fn dry_run_validates_and_stores_nothing() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let h = pb::SubmissionHeader { dry_run: true, ..header(SCHOOL_A, term("2025/26", "autumn")) };
    let r = submit(&mut c, h, VALID).await.unwrap();
    assert_eq!(r.outcome(), pb::SubmitOutcome::Validated);
    assert_eq!(r.submission.unwrap().warning_count, 2);
    assert_eq!(app.stored_rows(), 0);
}

#[tokio::test]
async fn truncated_or_cancelled_streams_store_nothing() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let csv = valid_csv(200, 0);
    // The header announces more bytes than arrive.
    let h = pb::SubmissionHeader { content_length: csv.len() as u64, ..header(SCHOOL_A, term("2025/26", "autumn")) };
    let err = submit(&mut c, h.clone(), &csv[..csv.len() / 2]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("ended after"), "{}", err.message());

    // The client goes away mid-stream: the server sees a broken stream, not a short file.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SubmitFeedRequest { part: Some(Part::Header(h.clone())) }).await.unwrap();
    tx.send(pb::SubmitFeedRequest { part: Some(Part::CsvChunk(csv[..1000].to_vec())) }).await.unwrap();
    let mut c2 = c.clone();
    let call = tokio::spawn(async move { c2.submit_feed(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    call.abort();
    let _ = call.await;
    drop(tx);
    assert_eq!(app.stored_rows(), 0);

    // The server is still well and takes the whole feed.
    let ok = submit(&mut c, h, &csv).await.unwrap();
    assert_eq!(ok.submission.unwrap().row_count, 200);
}

#[tokio::test]
async fn oversized_feeds_are_refused_with_a_clear_message() {
    let app = spawn_app_with(Limits { max_feed_bytes: 4096, ..Limits::default() }).await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let err = submit(&mut c, header(SCHOOL_A, term("2025/26", "autumn")), &valid_csv(200, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("larger than this server accepts"), "{}", err.message());
    assert_eq!(app.stored_rows(), 0);
}

#[tokio::test]
async fn bad_headers_are_invalid_arguments() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let mut h = header(SCHOOL_A, term("2025/26", "autumn"));
    h.school_term.as_mut().unwrap().academic_year = "2025/27".into();
    let err = submit(&mut c, h, VALID).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("first plus one"), "{}", err.message());
    let no_header = tokio_stream::iter(vec![pb::SubmitFeedRequest { part: Some(Part::CsvChunk(VALID.to_vec())) }]);
    assert_eq!(c.submit_feed(no_header).await.unwrap_err().code(), Code::InvalidArgument);
}

fn record(upn: &str, absent: u64) -> pb::PupilRecord {
    pb::PupilRecord {
        upn: upn.into(),
        ncyear: "7".into(),
        sex: "F".into(),
        ethnicity: "BAFR".into(),
        fsm: Some(true),
        eal: Some(false),
        sen: "K".into(),
        sessions_possible: Some(140),
        sessions_authorised: Some(absent),
        sessions_unauthorised: Some(0),
        suspensions: Some(0),
        permanent_exclusion: Some(false),
        mh_referral: Some(false),
        ..Default::default()
    }
}

#[tokio::test]
async fn record_batches_follow_the_same_contract() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let h = header(SCHOOL_A, term("2025/26", "autumn"));
    let batch = |records| pb::SubmitFeedRequest { part: Some(Part::Records(pb::RecordBatch { records })) };
    let stream = vec![
        pb::SubmitFeedRequest { part: Some(Part::Header(h.clone())) },
        batch(vec![record(&upn(1), 3), record(&upn(2), 0)]),
        batch(vec![record(&upn(3), 20)]),
    ];
    let ok = c.submit_feed(tokio_stream::iter(stream)).await.unwrap().into_inner();
    assert_eq!(ok.submission.as_ref().unwrap().source(), pb::FeedSource::Records);
    assert_eq!(ok.submission.unwrap().row_count, 3);

    let mut bad = record(&upn(5), 200);
    bad.sex = String::new();
    let stream = vec![pb::SubmitFeedRequest { part: Some(Part::Header(h)) }, batch(vec![record(&upn(4), 1), bad])];
    let err = c.submit_feed(tokio_stream::iter(stream)).await.unwrap_err();
    let rows: Vec<_> = rejection_rows(&err).into_iter().map(|(l, c, code, _)| (l, c, code)).collect();
    assert_eq!(
        rows,
        vec![
            (3, "sex".to_string(), "required".to_string()),
            (3, "sessions_unauthorised".into(), "inconsistent".into())
        ]
    );
}

#[tokio::test]
async fn concurrent_submissions_for_different_schools_all_land() {
    let app = spawn_app().await;
    let schools: Vec<u32> = (0..4).map(|i| 200001 + i).collect();
    let mut calls = Vec::new();
    for (i, &urn) in schools.iter().enumerate() {
        let mut c = app.feed(&app.key(Role::School, &[urn])).await;
        calls.push(tokio::spawn(async move {
            submit(&mut c, header(urn, term("2025/26", "summer")), &valid_csv(500, i as u64)).await
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().outcome(), pb::SubmitOutcome::Accepted);
    }
    assert_eq!(app.stored_rows(), 2000);
}
