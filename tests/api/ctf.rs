//! Common Transfer File submissions over the API: accepted with the hand-checked rows,
//! rejected with each finding's file, line and element, and the stream's format rules.

use riskid::api::pb::{self, submit_feed_request::Part};
use riskid::auth::Role;
use riskid::client::ctf_stream;
use tonic::Code;

use crate::helpers::*;

const XML: &str = include_str!("../fixtures/ctf/ctf25-autumn.xml");
const SUPP: &str = include_str!("../fixtures/ctf/ctf25-autumn-supplement.csv");

fn ctf_header(dry_run: bool) -> pb::SubmissionHeader {
    pb::SubmissionHeader { format: pb::FeedFormat::Ctf as i32, dry_run, ..header(SCHOOL_A, term("2025/26", "autumn")) }
}

async fn send(
    c: &mut pb::feed_service_client::FeedServiceClient<riskid::client::Authed>,
    h: pb::SubmissionHeader,
    xml: &str,
    supp: &str,
) -> Result<pb::SubmitFeedResponse, tonic::Status> {
    c.submit_feed(ctf_stream(h, xml.as_bytes().to_vec(), supp.as_bytes().to_vec())).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn a_ctf_with_its_supplement_is_stored_as_the_rows_derived_from_it() {
    let app = spawn_app().await;
    let school = app.key(Role::School, &[SCHOOL_A]);
    let mut c = app.feed(&school).await;
    let dry = send(&mut c, ctf_header(true), XML, SUPP).await.unwrap();
    assert_eq!(dry.outcome(), pb::SubmitOutcome::Validated);
    assert_eq!(app.stored_rows(), 0);
    let r = send(&mut c, ctf_header(false), XML, SUPP).await.unwrap();
    assert_eq!(r.outcome(), pb::SubmitOutcome::Accepted);
    let s = r.submission.unwrap();
    assert_eq!((s.row_count, s.source()), (5, pb::FeedSource::Ctf));
    // Warnings name their file and element.
    let left_out = s.warnings.iter().find(|w| w.code == "pupil_left_out").unwrap();
    assert_eq!(left_out.file(), pb::ViolationFile::Ctf);
    assert_eq!(left_out.element, "CTfile/CTFpupilData/Pupil[6]/BasicDetails/NCyearActual");
    assert!(left_out.field.starts_with("ctf.lines["), "{}", left_out.field);
    let cpp = s.warnings.iter().find(|w| w.code == "statutory_cin" && w.file() == pb::ViolationFile::Supplement);
    assert_eq!(cpp.unwrap().field, "supplement.lines[5].cin");
    // The same again is unchanged; a changed supplement is a new submission.
    let again = send(&mut c, ctf_header(false), XML, SUPP).await.unwrap();
    assert_eq!(again.outcome(), pb::SubmitOutcome::Unchanged);

    // The stored rows, as the school's own data manager and an analyst read them.
    for key in [school.clone(), app.key(Role::Analyst, &[]), app.key(Role::LinkWorker, &[SCHOOL_A])] {
        let mut c = app.feed(&key).await;
        let rows = c
            .list_submission_rows(pb::ListSubmissionRowsRequest {
                submission_id: s.submission_id.clone(),
                page_size: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rows.rows.len(), 2);
        assert_eq!(rows.rows[0].upn, "B359200125005", "UPN order");
        assert_eq!(rows.rows[0].sessions_possible, Some(140));
        assert!(!rows.next_page_token.is_empty());
        let mut all = rows.rows;
        let mut token = rows.next_page_token;
        while !token.is_empty() {
            let page = c
                .list_submission_rows(pb::ListSubmissionRowsRequest {
                    submission_id: s.submission_id.clone(),
                    page_size: 2,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            all.extend(page.rows);
            token = page.next_page_token;
        }
        assert_eq!(all.len(), 5);
        let ada = all.iter().find(|r| r.upn == "V359200125001").unwrap();
        assert_eq!(
            (ada.sessions_possible, ada.sessions_authorised, ada.sessions_unauthorised, ada.absence_spells),
            (Some(16), Some(4), Some(3), Some(3))
        );
    }
    // Another school's key, or a key that may not read pupils, learns nothing.
    for (key, code) in [
        (app.key(Role::School, &[SCHOOL_B]), Code::NotFound),
        (app.key(Role::LinkWorker, &[SCHOOL_B]), Code::NotFound),
        (app.key(Role::Service, &[]), Code::PermissionDenied),
        (app.key(Role::Admin, &[]), Code::PermissionDenied),
    ] {
        let mut c = app.feed(&key).await;
        let err = c
            .list_submission_rows(pb::ListSubmissionRowsRequest {
                submission_id: s.submission_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
}

#[tokio::test]
async fn a_rejected_ctf_names_the_xml_line_and_element_and_the_supplement_line() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let xml = XML.replacen("<NCyearActual>4</NCyearActual>", "<NCyearActual>15x</NCyearActual>", 1);
    let supp = SUPP.replace("M359200125004,0,0,N,0,CPP", "M359200125004,0,0,N,0,CLA");
    let err = send(&mut c, ctf_header(false), &xml, &supp).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let line = xml.lines().position(|l| l.contains("15x")).unwrap() + 1;
    let fields = bad_request_fields(&err);
    assert!(fields.iter().any(|(f, r)| *f == format!("ctf.lines[{line}].ncyear") && r == "INVALID_CODE"), "{fields:?}");
    assert!(fields.iter().any(|(f, r)| f == "supplement.lines[5].cin" && r == "CLA_CONFLICT"), "{fields:?}");
    assert_eq!(app.stored_rows(), 0);
    // The full report carries the element path.
    use tonic_types::StatusExt;
    let id = err.get_details_error_info().unwrap().metadata["report_id"].clone();
    let report = c.get_feed_report(pb::GetFeedReportRequest { report_id: id }).await.unwrap().into_inner();
    let nc = report.errors.iter().find(|v| v.column == "ncyear").unwrap();
    assert_eq!(nc.element, "CTfile/CTFpupilData/Pupil[1]/BasicDetails/NCyearActual");
    assert_eq!((nc.file(), nc.line), (pb::ViolationFile::Ctf, line as u64));
    // No supplement at all: one clear error.
    let err = send(&mut c, ctf_header(false), XML, "").await.unwrap_err();
    assert_eq!(bad_request_fields(&err), vec![("supplement.lines[1]".to_string(), "NO_SUPPLEMENT".to_string())]);
}

#[tokio::test]
async fn ctf_parts_need_the_ctf_format_and_the_ctf_format_needs_them() {
    let app = spawn_app().await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let csv_header = header(SCHOOL_A, term("2025/26", "autumn"));
    let parts = |h: pb::SubmissionHeader, p: Part| {
        tokio_stream::iter(vec![
            pb::SubmitFeedRequest { part: Some(Part::Header(h)) },
            pb::SubmitFeedRequest { part: Some(p) },
        ])
    };
    let err = c.submit_feed(parts(csv_header.clone(), Part::CtfChunk(XML.into()))).await.unwrap_err();
    assert_eq!((err.code(), error_reason(&err).as_str()), (Code::InvalidArgument, "INVALID_STREAM"));
    let err = c.submit_feed(parts(ctf_header(false), Part::CsvChunk(VALID.to_vec()))).await.unwrap_err();
    assert_eq!(error_reason(&err), "INVALID_STREAM");
    assert!(err.message().contains("ctf_chunk"), "{}", err.message());
    let bad_format = pb::SubmissionHeader { format: 99, ..csv_header };
    let err = c.submit_feed(parts(bad_format, Part::CsvChunk(VALID.to_vec()))).await.unwrap_err();
    assert_eq!(bad_request_fields(&err)[0].0, "header.format");
    // A CSV sent as a CTF is refused as not a CTF, with nothing stored.
    let err = send(&mut c, ctf_header(false), "upn,ncyear\n", SUPP).await.unwrap_err();
    assert!(bad_request_fields(&err).iter().any(|(_, r)| r == "NOT_CTF"), "{err:?}");
    assert_eq!(app.stored_rows(), 0);
}

/// A 100 MB CTF is refused once the server's feed limit is passed: it never reads the rest, and
/// the client streams it lazily, so neither side holds 100 MB.
#[tokio::test]
async fn a_100_mb_ctf_is_refused_at_the_size_limit_without_reading_it_all() {
    let app = spawn_app_with(riskid::app::Limits { max_feed_bytes: 1 << 20, ..Default::default() }).await;
    let mut c = app.feed(&app.key(Role::School, &[SCHOOL_A])).await;
    let chunk: Vec<u8> = b"<Pupil><UPN>x</UPN></Pupil>".repeat(256 << 10 >> 5);
    let n = (100 << 20) / chunk.len();
    let parts = std::iter::once(pb::SubmitFeedRequest { part: Some(Part::Header(ctf_header(false))) })
        .chain((0..n).map(move |_| pb::SubmitFeedRequest { part: Some(Part::CtfChunk(chunk.clone())) }));
    let err = c.submit_feed(tokio_stream::iter(parts)).await.unwrap_err();
    assert_eq!((err.code(), error_reason(&err).as_str()), (Code::ResourceExhausted, "FEED_TOO_LARGE"));
    assert_eq!(app.stored_rows(), 0);
}
