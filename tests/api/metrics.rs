//! Operators scrape /metrics: RPC counts by method and code, latencies, ingest, model in use,
//! permits; never a pupil value or a school id.

use riskid::api::pb::{self, risk_service_client::RiskServiceClient};
use riskid::auth::Role;
use riskid::client::Bearer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn metrics_count_rpcs_and_ingest_without_pupil_or_school_values() {
    let app = spawn_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(riskid::metrics::serve(listener, app.app.clone(), async {
        let _ = stopped.await;
    }));

    let b = submit_world(&app, 1).await;
    let urn = b.world.schools[0].urn;
    let mut c = RiskServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Analyst, &[])));
    for n in 0..3 {
        let e = c.get_pupil_risk(pb::GetPupilRiskRequest { upn: upn(900 + n), ..Default::default() }).await;
        assert_eq!(e.unwrap_err().code(), tonic::Code::NotFound);
    }
    let ok =
        c.list_school_risks(pb::ListSchoolRisksRequest { school_term: Some(st(urn, b.latest)), ..Default::default() });
    let first = ok.await.unwrap().into_inner().risks[0].upn.clone();

    let text = scrape(addr, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/plain; version=0.0.4"), "{text}");
    assert!(
        text.contains(r#"riskid_rpc_requests_total{code="NOT_FOUND",method="/riskid.v1.RiskService/GetPupilRisk"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"riskid_rpc_requests_total{code="OK",method="/riskid.v1.RiskService/ListSchoolRisks"} 1"#));
    assert!(text.contains(r#"riskid_rpc_duration_seconds_count{method="/riskid.v1.RiskService/GetPupilRisk"} 3"#));
    assert!(text.contains(r#"riskid_feeds_total{outcome="accepted"}"#));
    let rows: u64 = b.world.feeds.iter().map(|f| f.rows.len() as u64).sum();
    assert!(text.contains(&format!("riskid_ingest_rows_total {rows}")), "every accepted row counted");
    let model = app.store.active_model().unwrap().unwrap().model_id;
    assert!(text.contains(&format!("riskid_model_active{{model_id=\"{model}\"}} 1")));
    assert!(text.contains("riskid_ingest_slots 4") && text.contains("riskid_ingests_in_flight 0"));
    assert!(text.contains("riskid_scoring_duration_seconds_count{kind=\"feed\"}"));
    // Nothing about a pupil or a school.
    assert!(!text.contains(&first) && !text.contains(&upn(900)), "a UPN reached the metrics");
    assert!(!text.contains(&urn.to_string()), "a school id reached the metrics");
    assert!(scrape(addr, "/other").await.starts_with("HTTP/1.1 404"));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_call_cut_off_by_its_deadline_is_still_counted() {
    let app = spawn_app().await;
    let key = app.key(Role::School, &[SCHOOL_A]);
    let mut c = app.feed(&key).await;
    // The header, then nothing: the call's own 200 ms deadline ends it.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SubmitFeedRequest {
        part: Some(pb::submit_feed_request::Part::Header(header(SCHOOL_A, term("2025/26", "autumn")))),
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.set_timeout(std::time::Duration::from_millis(200));
    let e = c.submit_feed(req).await.unwrap_err();
    assert!(matches!(e.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded), "{e:?}");
    drop(tx);
    // The server records the call when it drops it; wait for that (bounded), not for a time.
    // DEADLINE_EXCEEDED, unless a loaded machine delayed the request so long that the
    // client's own deadline reset the stream well before ours: then CANCELLED.
    let prefix = r#"riskid_rpc_requests_total{code=""#;
    let method = r#"",method="/riskid.v1.FeedService/SubmitFeed"} "#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = app.app.render_metrics().await;
        let counted: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix) && l.contains(method)).collect();
        if !counted.is_empty() {
            assert_eq!(counted.len(), 1, "counted under one code: {counted:?}");
            let ok = [format!("{prefix}DEADLINE_EXCEEDED{method}1"), format!("{prefix}CANCELLED{method}1")];
            assert!(ok.contains(&counted[0].to_string()), "counted once, as cut off: {counted:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cut-off call was never counted");
        // Poll, not spin: a spinning test starves the server it waits for on a loaded machine.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
