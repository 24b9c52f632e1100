//! Scoring throughput in process and over gRPC, and cohort proposal latency.
//! Run with `cargo bench --bench scoring`.

use std::sync::Arc;
use std::time::Instant;

use riskid::api::pb::{self, risk_service_client::RiskServiceClient};
use riskid::app::{App, Limits, ProposeInput};
use riskid::auth::{Principal, Role};
use riskid::cohort::{CohortParams, Policy};
use riskid::domain::{SchoolTerm, Urn};
use riskid::model::ModelArtifact;
use riskid::model::features::{History, features};
use riskid::scoring::score_pupil;
use riskid::storage::Store;
use riskid::synth::{WorldConfig, generate};

fn main() {
    let model = ModelArtifact::from_json(riskid::app::BUNDLED_MODEL).unwrap();
    let world = generate(&WorldConfig { schools: 40, years: 1, seed: 2, ..Default::default() }).unwrap();
    let history = History::from_rows(world.feeds.iter().flat_map(|f| {
        let st = SchoolTerm { urn: f.urn, term: f.term };
        f.rows.iter().cloned().map(move |r| (st, r))
    }));
    let last = *world.terms.last().unwrap();
    let pupils: Vec<_> = world
        .feeds
        .iter()
        .filter(|f| f.term == last)
        .flat_map(|f| f.rows.iter().map(move |r| (SchoolTerm { urn: f.urn, term: f.term }, r)))
        .collect();
    println!("{} pupils in the latest term", pupils.len());

    // 1. Probabilities from features, and features + probabilities, in process (one core).
    let feats: Vec<_> = pupils.iter().map(|(st, r)| features(&history.pupils[&r.upn], r, st.term).values).collect();
    let t = Instant::now();
    let mut sink = 0.0;
    let rounds = 20;
    for _ in 0..rounds {
        for f in &feats {
            sink += model.probabilities(f)[0];
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!("probabilities from features: {:.0} pupils/s (one core)", (rounds * feats.len()) as f64 / s);
    let t = Instant::now();
    for _ in 0..5 {
        for (st, r) in &pupils {
            let f = features(&history.pupils[&r.upn], r, st.term);
            sink += model.probabilities(&f.values)[0];
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!("features + probabilities: {:.0} pupils/s (one core)", (5 * pupils.len()) as f64 / s);
    let t = Instant::now();
    for (st, r) in &pupils {
        sink += score_pupil(&model, &history.pupils[&r.upn], r, *st).any_adverse;
    }
    let s = t.elapsed().as_secs_f64();
    println!("full scoring with explanations: {:.0} pupils/s (one core)", pupils.len() as f64 / s);
    assert!(sink > 0.0);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // 2. Stateless scoring over gRPC, batches of 1,000, four calls in flight.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (key, hash, prefix) = riskid::auth::generate_key();
        let empty = Default::default();
        store
            .create_key(
                &riskid::storage::NewKey {
                    key_hash: &hash,
                    prefix: &prefix,
                    role: Role::Analyst,
                    schools: &empty,
                    label: "",
                    created_at: 0,
                },
                "operator:test",
            )
            .unwrap();
        let app = Arc::new(App::new(store.clone(), Limits::default()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(riskid::server::serve(listener, app.clone(), None, std::future::pending()));
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let to_pb = |st: SchoolTerm, r: &riskid::domain::PupilTerm| pb::PupilToScore {
            school_term: Some(riskid::api::school_term_pb(st.urn, st.term)),
            record: Some(riskid::api::record_from_cells(&riskid::synth::row_cells(r))),
            prior_terms: vec![],
        };
        let batch: Vec<pb::PupilToScore> = pupils.iter().take(1000).map(|(st, r)| to_pb(*st, r)).collect();
        let calls = 200;
        // Requests are built before the clock starts: the figure is the server's, not the client's.
        let work: Vec<Vec<pb::ScoreRecordsRequest>> = (0..4)
            .map(|_| (0..calls / 4).map(|_| pb::ScoreRecordsRequest { pupils: batch.clone(), view: 0 }).collect())
            .collect();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (w, requests) in work.into_iter().enumerate() {
            let mut c = RiskServiceClient::with_interceptor(ch.clone(), riskid::client::Bearer::new(&key));
            tasks.push(tokio::spawn(async move {
                for req in requests {
                    let r = c.score_records(req).await;
                    assert!(r.is_ok(), "worker {w}: {:?}", r.err());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "stateless scoring over gRPC, batches of 1,000, 4 in flight: {:.0} pupils/s",
            (calls * 1000) as f64 / s
        );

        // 3. Cohort proposal latency for a 2,000-pupil school (stored scores → ranked, stored proposal).
        let urn = Urn::new(190001).unwrap();
        let (skey, shash, sprefix) = riskid::auth::generate_key();
        let set = [urn].into_iter().collect();
        store
            .create_key(
                &riskid::storage::NewKey {
                    key_hash: &shash,
                    prefix: &sprefix,
                    role: Role::School,
                    schools: &set,
                    label: "",
                    created_at: 0,
                },
                "operator:test",
            )
            .unwrap();
        let big =
            generate(&WorldConfig { schools: 1, years: 1, seed: 3, primary_year_size: 290, ..Default::default() })
                .unwrap();
        let feed = big.feeds.last().unwrap();
        let mut fc = pb::feed_service_client::FeedServiceClient::with_interceptor(
            ch.clone(),
            riskid::client::Bearer::new(&skey),
        );
        let header = pb::SubmissionHeader {
            school_term: Some(riskid::api::school_term_pb(urn, feed.term)),
            ..Default::default()
        };
        let csv = riskid::synth::feed_csv(&feed.rows);
        fc.submit_feed(riskid::client::submission_stream(header, csv)).await.unwrap();
        let analyst = Principal { key_id: 1, role: Role::Analyst, schools: Default::default() };
        let mut lat = Vec::new();
        for i in 0..200 {
            let params = CohortParams { capacity: 36, min_year: 0, max_year: 13, policy: Policy::AnyAdverse, seed: i };
            let t = Instant::now();
            app.propose_cohort(
                &analyst,
                ProposeInput {
                    school_term: SchoolTerm { urn, term: feed.term },
                    params,
                    force: false,
                    request_id: None,
                },
            )
            .await
            .unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "cohort proposal, {}-pupil school (read scores, rank, store, audit): p50 {:.2} ms, p99 {:.2} ms",
            feed.rows.len(),
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );
    });
}
