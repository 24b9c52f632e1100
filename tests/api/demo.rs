//! The demo pipeline end to end, smaller than the quick start.

use riskid::demo::{DemoOptions, run};

#[tokio::test]
async fn the_demo_runs_the_whole_mission_and_reports_it() {
    let keep = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        schools: 3,
        years: 2,
        seed: 3,
        capacity: 8,
        keep: Some(keep.path().to_path_buf()),
        ctf: false,
        serve: None,
    };
    let mut out: Vec<u8> = Vec::new();
    let s = run(opts, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(s.feeds_submitted, 3 * 6);
    assert!(!s.trained_model.is_empty());
    assert_eq!(s.activated, s.active_model == s.trained_model);
    assert_eq!(s.cohorts.len(), 3);
    for (urn, proposed, finalised) in &s.cohorts {
        assert_eq!(*proposed, 8, "school {urn}");
        assert!(*finalised >= 6 && *finalised <= 9, "school {urn}: {finalised}");
    }
    assert!(s.removed >= 3 && s.added >= 1);
    assert!(s.audit_ok && s.audit_events > 30);
    for section in [
        "== Cohorts",
        "== Model",
        "== Fairness flags",
        "== Overrides",
        "== Audit chain: verified",
        "riskid serve --data-dir",
    ] {
        assert!(text.contains(section), "missing {section:?} in:\n{text}");
    }
    // The kept directory serves again: the store opens with everything in it.
    let store = riskid::storage::Store::open(keep.path()).unwrap();
    assert_eq!(
        store.list_submissions(&riskid::storage::SubmissionFilter { limit: 100, ..Default::default() }).unwrap().len(),
        18
    );
}

/// Schools sending Common Transfer Files + supplements instead of CSV: the same rows are stored
/// (row digests equal), so the same scores and cohorts follow.
#[tokio::test]
async fn the_demo_on_common_transfer_files_stores_the_same_rows_as_on_csv() {
    let mut digests = Vec::new();
    let mut cohorts = Vec::new();
    for ctf in [false, true] {
        let keep = tempfile::tempdir().unwrap();
        let opts = DemoOptions {
            schools: 2,
            years: 2,
            seed: 8,
            capacity: 6,
            keep: Some(keep.path().to_path_buf()),
            ctf,
            serve: None,
        };
        let mut out: Vec<u8> = Vec::new();
        let s = run(opts, &mut out).await.unwrap();
        assert_eq!(s.feeds_submitted, 2 * 6);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.contains("submitted Common Transfer Files"), ctf, "{text}");
        let store = riskid::storage::Store::open(keep.path()).unwrap();
        let subs = store.all_submissions().unwrap();
        assert!(subs.iter().all(|r| (r.source == riskid::storage::FeedSource::Ctf) == ctf));
        digests.push(store.row_digests().unwrap());
        cohorts.push(s.cohorts);
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(cohorts[0], cohorts[1]);
}
