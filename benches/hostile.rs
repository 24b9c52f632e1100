//! Hostile load against the real release binary, on loopback only: the cases an outsider
//! found against the first release (issue 10), each bounded in size and time. For each it
//! prints the reply, the server's RSS and CPU, and the worst latency of a health check and
//! of a GetPupilRisk call made every 10 ms while it runs.
//!
//! Run with `cargo bench --bench hostile` (builds the release binary first).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use riskid::api::pb::{self, feed_service_client::FeedServiceClient, risk_service_client::RiskServiceClient};
use riskid::client::{Bearer, raw_call};
use riskid::domain::check_letter;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn riskid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_riskid"))
}

fn upn(n: u64) -> String {
    let rest = format!("{n:012}");
    format!("{}{rest}", check_letter(rest.as_bytes()) as char)
}

fn feed(rows: usize, bad: bool) -> Vec<u8> {
    let mut s = riskid::ingest::contract_header();
    for i in 0..rows {
        let year = if bad { 99 } else { 7 + i % 5 };
        let absent = i % 25;
        s.push_str(&format!(
            "\n{},{year},F,WBRI,N,N,N,,,,140,{absent},0,{},0,,N,,,,,,,,,N",
            upn(i as u64),
            absent.min(4)
        ));
    }
    s.into_bytes()
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU of the process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Probes the server every 10 ms while a case runs; records the worst latencies and RSS.
/// The probe has a thread, a runtime and a connection of its own: the case's client work
/// (building a 16 MB message, say) must not delay the probe and be charged to the server.
struct Probe {
    stop: Arc<AtomicBool>,
    health_us: Arc<AtomicU64>,
    risk_us: Arc<AtomicU64>,
    rss_kib: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Probe {
    fn start(addr: String, reader_key: String, pupil: String, pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (health_us, risk_us, rss_kib) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, h, r, m) = (stop.clone(), health_us.clone(), risk_us.clone(), rss_kib.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let ch = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
                let mut health = HealthClient::new(ch.clone());
                let mut risks = RiskServiceClient::with_interceptor(ch, Bearer::new(&reader_key));
                let _ = ready_tx.send(());
                while !s.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let _ = tokio::time::timeout(Duration::from_secs(10), health.check(HealthCheckRequest::default()))
                        .await;
                    h.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    let t = Instant::now();
                    let req = pb::GetPupilRiskRequest { upn: pupil.clone(), view: 0 };
                    let _ = tokio::time::timeout(Duration::from_secs(10), risks.get_pupil_risk(req)).await;
                    r.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    m.fetch_max(proc_status(pid, "VmRSS:"), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        });
        // Connected before the case starts, so the first probe is not a connection set-up.
        ready_rx.recv().expect("the probe connects to the server");
        Self { stop, health_us, risk_us, rss_kib, thread }
    }

    async fn finish(self) -> (f64, f64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await.expect("joined");
        joined.expect("the probe ran to the end");
        (
            self.health_us.load(Ordering::Relaxed) as f64 / 1e3,
            self.risk_us.load(Ordering::Relaxed) as f64 / 1e3,
            self.rss_kib.load(Ordering::Relaxed) / 1024,
        )
    }
}

fn code(r: &Result<impl Sized, tonic::Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

fn header(urn: &str, request_id: &str) -> pb::SubmitFeedRequest {
    pb::SubmitFeedRequest {
        part: Some(pb::submit_feed_request::Part::Header(pb::SubmissionHeader {
            school_term: Some(pb::SchoolTerm {
                school_urn: urn.into(),
                academic_year: "2025/26".into(),
                term: pb::TermName::Autumn as i32,
            }),
            request_id: request_id.into(),
            ..Default::default()
        })),
    }
}

/// `n` empty records in one RecordBatch message, encoded by hand.
fn empty_records(n: usize) -> Vec<u8> {
    let batch = [0x0a_u8, 0x00].repeat(n);
    let mut msg = vec![0x1a];
    prost::encoding::encode_varint(batch.len() as u64, &mut msg);
    msg.extend(batch);
    msg
}

fn csv_chunks(csv: &[u8]) -> Vec<Vec<u8>> {
    csv.chunks(256 << 10)
        .map(|c| {
            pb::SubmitFeedRequest { part: Some(pb::submit_feed_request::Part::CsvChunk(c.to_vec())) }.encode_to_vec()
        })
        .collect()
}

const SUBMIT: &str = "/riskid.v1.FeedService/SubmitFeed";
const SCORE: &str = "/riskid.v1.RiskService/ScoreRecords";
const AUDIT: &str = "/riskid.v1.AuditService/ListAuditEvents";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let key = |args: &[&str]| {
        let out = riskid().args(["keys", "create", "--data-dir", &d]).args(args).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let schools: Vec<String> = (0..6).map(|i| format!("{}", 100_001 + i)).collect();
    let school_keys: Vec<String> = schools.iter().map(|s| key(&["--role", "school", "--school", s])).collect();
    let service = key(&["--role", "service"]);
    let admin = key(&["--role", "admin"]);
    let mut child = riskid()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", &d, "--ingest-idle-timeout", "3s"])
        .env("RUST_LOG", "warn,riskid=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let server = Server { child, addr };
    let pid = server.child.id();
    let ch = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    println!("riskid {} (pid {pid}), idle RSS {} MiB", server.addr, proc_status(pid, "VmRSS:") / 1024);

    // School A's data, so GetPupilRisk has a pupil to read.
    let mut a = FeedServiceClient::with_interceptor(ch.clone(), Bearer::new(&school_keys[0]));
    let first = raw_call(
        ch.clone(),
        &school_keys[0],
        SUBMIT,
        [vec![header(&schools[0], "").encode_to_vec()], csv_chunks(&feed(2_000, false))].concat(),
    )
    .await;
    assert!(first.is_ok(), "{first:?}");
    let probe_key = school_keys[0].clone();
    let pupil = upn(7);

    println!(
        "\n{:<58} {:<18} {:>8} {:>8} {:>9} {:>10} {:>10}",
        "case", "reply", "time ms", "cpu s", "RSS MiB", "health ms", "risk ms"
    );
    macro_rules! case {
        ($name:expr, $body:expr) => {{
            let probe = Probe::start(server.addr.clone(), probe_key.clone(), pupil.clone(), pid);
            let cpu = cpu_seconds(pid);
            let t = Instant::now();
            let reply: String = $body;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let (health, risk, rss) = probe.finish().await;
            println!(
                "{:<58} {:<32} {:>8.0} {:>8.2} {:>9} {:>10.1} {:>10.1}",
                $name,
                reply,
                ms,
                cpu_seconds(pid) - cpu,
                rss.max(proc_status(pid, "VmRSS:") / 1024),
                health,
                risk
            );
        }};
    }

    let k = school_keys[1].clone();
    let s1 = schools[1].clone();
    case!("SubmitFeed: 8,000,000 empty records in one message (16 MB)", {
        code(&raw_call(ch.clone(), &k, SUBMIT, vec![header(&s1, "").encode_to_vec(), empty_records(8_000_000)]).await)
    });
    case!("SubmitFeed: 4,000 messages of 2,000 empty records (16 MB)", {
        let msgs =
            std::iter::once(header(&s1, "").encode_to_vec()).chain(std::iter::repeat_n(empty_records(2_000), 4_000));
        code(&raw_call(ch.clone(), &k, SUBMIT, msgs.collect()).await)
    });
    case!("SubmitFeed: 2,001 empty records in one batch", {
        code(&raw_call(ch.clone(), &k, SUBMIT, vec![header(&s1, "").encode_to_vec(), empty_records(2_001)]).await)
    });
    case!("ScoreRecords: 7,900,000 empty prior_terms (16 MB)", {
        let pupil = [0x1a_u8, 0x00].repeat(7_900_000);
        let mut msg = vec![0x0a];
        prost::encoding::encode_varint(pupil.len() as u64, &mut msg);
        msg.extend(pupil);
        code(&raw_call(ch.clone(), &service, SCORE, vec![msg]).await)
    });
    case!("ScoreRecords: 1,501 empty pupils", {
        code(&raw_call(ch.clone(), &service, SCORE, vec![[0x0a_u8, 0x00].repeat(1_501)]).await)
    });
    case!("ListAuditEvents: 16 MB request", {
        let msg = pb::ListAuditEventsRequest { school_urn: "x".repeat(16 << 20), ..Default::default() }.encode_to_vec();
        code(&raw_call(ch.clone(), &admin, AUDIT, vec![msg]).await)
    });
    case!("SubmitFeed: 16 MB of control characters as CSV", {
        let junk: Vec<u8> =
            vec![1u8; 16 << 20].chunks(63).flat_map(|c| [c, b"\n"].concat()).take((16 << 20) - 64).collect();
        code(
            &raw_call(ch.clone(), &k, SUBMIT, [vec![header(&s1, "").encode_to_vec()], csv_chunks(&junk)].concat())
                .await,
        )
    });
    case!("SubmitFeed: sessions_authorised = 10^20", {
        let csv = format!(
            "{}\n{},7,F,WBRI,N,N,N,,,,140,99999999999999999999,1,,0,,N,,,,,,,,,N\n",
            riskid::ingest::contract_header(),
            upn(1)
        );
        code(
            &raw_call(
                ch.clone(),
                &k,
                SUBMIT,
                [vec![header(&s1, "").encode_to_vec()], csv_chunks(csv.as_bytes())].concat(),
            )
            .await,
        )
    });
    case!("SubmitFeed: 5,000 errors, then GetFeedReport", {
        let r = raw_call(
            ch.clone(),
            &k,
            SUBMIT,
            [vec![header(&s1, "").encode_to_vec()], csv_chunks(&feed(5_000, true))].concat(),
        )
        .await;
        let status = r.unwrap_err();
        let details = status.details().len();
        let id = tonic_types::StatusExt::get_details_error_info(&status)
            .and_then(|i| i.metadata.get("report_id").cloned())
            .unwrap_or_default();
        let mut c = FeedServiceClient::with_interceptor(ch.clone(), Bearer::new(&k));
        let report =
            c.get_feed_report(pb::GetFeedReportRequest { report_id: id }).await.map(|r| r.into_inner().errors.len());
        format!("{:?} {details} B, {} listed", status.code(), report.unwrap_or(0))
    });
    case!("4 idle uploads (4 schools), then a fifth school submits", {
        let mut idle = Vec::new();
        for i in 2..6 {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitFeedRequest>(1);
            tx.send(header(&schools[i], "")).await.unwrap();
            let mut c = FeedServiceClient::with_interceptor(ch.clone(), Bearer::new(&school_keys[i]));
            idle.push((
                tx,
                tokio::spawn(async move { c.submit_feed(tokio_stream::wrappers::ReceiverStream::new(rx)).await }),
            ));
        }
        let r = raw_call(
            ch.clone(),
            &school_keys[1],
            SUBMIT,
            [vec![header(&schools[1], "").encode_to_vec()], csv_chunks(&feed(500, false))].concat(),
        )
        .await;
        let fifth = code(&r);
        let mut ended = 0;
        for (_tx, call) in idle {
            if call.await.unwrap().is_err() {
                ended += 1;
            }
        }
        format!("fifth {fifth}; {ended} idle ended")
    });
    case!("SubmitFeed: a valid 5,000-row feed (probes read meanwhile)", {
        let r = raw_call(
            ch.clone(),
            &school_keys[1],
            SUBMIT,
            [vec![header(&schools[1], "").encode_to_vec()], csv_chunks(&feed(5_000, false))].concat(),
        )
        .await;
        code(&r)
    });
    let _ = a.list_submissions(pb::ListSubmissionsRequest::default()).await;
    println!("\npeak RSS over the run (VmHWM): {} MiB", proc_status(pid, "VmHWM:") / 1024);
    drop(server);
}
