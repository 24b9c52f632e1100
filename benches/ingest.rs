//! Ingest throughput, end to end in process (parse, validate, store in SQLite), and through
//! the gRPC server. Prints figures; run with `cargo bench --bench ingest`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use riskid::app::{App, FeedBody, Limits};
use riskid::auth::{Principal, Role};
use riskid::domain::{Term, Urn, check_letter};
use riskid::storage::Store;

mod common;

/// A 2,000-pupil feed with every column filled, varied like real data.
fn feed(n: usize, seed: u64) -> Vec<u8> {
    // Each school's pupils have their own UPNs, as in life.
    let base = 100_000_000 + (seed % 100_000) * 10_000;
    let mut s = riskid::ingest::contract_header();
    let eth = ["WBRI", "APKN", "BAFR", "MWBC", "WOTH", "CHNE"];
    for i in 0..n {
        let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        let rest = format!("{:012}", base + i as u64);
        let upn = format!("{}{rest}", check_letter(rest.as_bytes()) as char);
        let absent = h % 30;
        let spells = absent.min(1 + h % 5);
        let susp = u64::from(h.is_multiple_of(40));
        s.push_str(&format!(
            "\n{upn},{},{},{},{},{},{},,N,{},140,{},{},{spells},{susp},{},N,{},expected,below,{},{},{},{},{},N",
            7 + i % 5,
            ["M", "F"][i % 2],
            eth[i % eth.len()],
            ["Y", "N", "N", "N"][(h % 4) as usize],
            ["N", "N", "Y"][(h % 3) as usize],
            ["N", "N", "N", "K", "E"][(h % 5) as usize],
            h % 3,
            absent / 2,
            absent - absent / 2,
            susp * 2,
            h % 12,
            h % 11,
            (h >> 8) % 11,
            (h >> 16) % 11,
            (h >> 24) % 11,
            (h >> 32) % 11
        ));
    }
    s.into_bytes()
}

/// User and system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn principal(urns: impl Iterator<Item = u32>) -> Principal {
    let schools: BTreeSet<Urn> = urns.map(|u| Urn::new(u).unwrap()).collect();
    Principal { key_id: 1, role: Role::School, schools }
}

/// Submits `files` over gRPC (one school each, two at a time) while one client reads pupil
/// risks in a loop, starting a read every `pace` (or as fast as it can, if none); returns the
/// submit time and the sorted read latencies (seconds).
async fn grpc_phase(
    app: Arc<App>,
    files: Vec<Vec<u8>>,
    term: Term,
    school_key: &str,
    reader_key: &str,
    upns: Vec<String>,
    pace: Option<std::time::Duration>,
) -> (f64, Vec<f64>) {
    use riskid::api::pb;
    use riskid::api::pb::feed_service_client::FeedServiceClient;
    use riskid::api::pb::risk_service_client::RiskServiceClient;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(riskid::server::serve(listener, app, None, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let mut risks = RiskServiceClient::with_interceptor(channel.clone(), riskid::client::Bearer::new(reader_key));
        let done = done.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            let mut tick = pace.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let t = Instant::now();
                let r = risks
                    .get_pupil_risk(pb::GetPupilRiskRequest { upn: upns[i % upns.len()].clone(), ..Default::default() })
                    .await
                    .unwrap()
                    .into_inner();
                lat.push(t.elapsed().as_secs_f64());
                assert!(!r.history.is_empty());
                i += 1;
            }
            lat
        })
    };
    let t = Instant::now();
    let files = Arc::new(std::sync::Mutex::new(files.into_iter().enumerate().collect::<Vec<_>>()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = FeedServiceClient::with_interceptor(channel.clone(), riskid::client::Bearer::new(school_key));
            let files = files.clone();
            tokio::spawn(async move {
                loop {
                    let next = files.lock().unwrap().pop();
                    let Some((i, csv)) = next else { break };
                    let header = pb::SubmissionHeader {
                        school_term: Some(riskid::api::school_term_pb(Urn::new(300_000 + i as u32).unwrap(), term)),
                        content_length: csv.len() as u64,
                        ..Default::default()
                    };
                    c.submit_feed(riskid::client::submission_stream(header, csv)).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = reader.await.unwrap();
    lat.sort_by(f64::total_cmp);
    let _ = stop.send(());
    let _ = server.await;
    (secs, lat)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    // The key row the in-process submissions reference; a school key and a reader's for gRPC.
    let schools: BTreeSet<Urn> = (0..200).map(|i| Urn::new(300_000 + i).unwrap()).collect();
    common::key(&store, Role::School, &schools, "bench");
    let reader_key = common::key(&store, Role::LinkWorker, &[Urn::new(300_000).unwrap()].into(), "bench reader");
    let school_key = common::key(&store, Role::School, &schools, "bench grpc");
    let app = Arc::new(App::new(store, Limits::default()).unwrap());
    let p = principal(300_000..300_200);
    let term = Term::parse("2025/26", "autumn").unwrap();
    let csv = feed(2000, 1);
    println!("feed: 2,000 pupils, {} KiB", csv.len() / 1024);

    // One 2,000-pupil file, repeated with fresh content (identical content is a no-op).
    let mut best = f64::MAX;
    for round in 0..10u64 {
        let body = FeedBody::Csv(feed(2000, round + 10));
        let t = Instant::now();
        let pass = p.may_submit(Urn::new(300_000).unwrap()).unwrap();
        rt.block_on(app.submit_feed(pass, term, body, None, false)).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "one 2,000-pupil file, submit with scoring (best of 10): {:.1} ms = {:.0} rows/s",
        best * 1e3,
        2000.0 / best
    );

    // 200 such files back to back, one per school.
    let files: Vec<Vec<u8>> = (0..200).map(|i| feed(2000, 1000 + i)).collect();
    let t = Instant::now();
    for (i, csv) in files.into_iter().enumerate() {
        let pass = p.may_submit(Urn::new(300_000 + i as u32).unwrap()).unwrap();
        rt.block_on(app.submit_feed(pass, term.next(), FeedBody::Csv(csv), None, false)).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!("200 files x 2,000 pupils back to back, submit with scoring: {:.2} s = {:.0} rows/s", s, 400_000.0 / s);

    // Through the gRPC API: 200 more files, two in flight (the per-key limit), while a link
    // worker reads a pupil's risk over and over; the reads' latencies are the figure.
    // Pupils of the last of the ten rounds above: school 300000's current feed.
    let upns: Vec<String> = {
        let rows = riskid::ingest::parse_csv(&feed(2000, 19)).unwrap().rows;
        rows.iter().step_by(7).map(|r| r.upn.as_str().to_owned()).collect()
    };
    // Reads at 200 a second (a borough's link workers and data managers at their busiest are
    // a few a second), then as fast as one client can (over a thousand a second, which takes
    // a good share of the two cores from ingest).
    for (round, pace, how) in [
        (0u64, Some(std::time::Duration::from_millis(5)), "a read every 5 ms"),
        (1, None, "a read as fast as one client can"),
    ] {
        let files: Vec<Vec<u8>> = (0..200).map(|i| feed(2000, 5000 + 1000 * round + i)).collect();
        let term = if round == 0 { term.next().next() } else { term.next().next().next() };
        let cpu = cpu_seconds();
        let (secs, lat) =
            rt.block_on(grpc_phase(app.clone(), files, term, &school_key, &reader_key, upns.clone(), pace));
        let cpu = cpu_seconds() - cpu;
        println!(
            "through gRPC, 200 files x 2,000 pupils, 2 in flight, {how}: {secs:.2} s = {:.0} rows/s",
            400_000.0 / secs
        );
        println!("  CPU meanwhile (server, clients and reader in this process): {cpu:.2} s = {:.2} cores", cpu / secs);
        println!(
            "  GetPupilRisk during it: {} reads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            lat[lat.len() / 2] * 1e3,
            lat[lat.len() * 99 / 100] * 1e3,
            lat[lat.len() - 1] * 1e3
        );
    }

    // Since submissions and their scores commit in one transaction, there is no separate
    // store-only path to time: the figure above is the whole ingest.
    let parse_only = Instant::now();
    for _ in 0..10 {
        riskid::ingest::parse_csv(&csv).unwrap();
    }
    let s = parse_only.elapsed().as_secs_f64() / 10.0;
    println!("parse + validate only, 2,000 pupils: {:.1} ms = {:.0} rows/s", s * 1e3, 2000.0 / s);
}
