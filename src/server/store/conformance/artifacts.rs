//! The suite for artifacts: declared, resumed, capped and expired.

use super::*;

fn file(path: &str, size: u64, fill: char) -> ArtifactFile {
    ArtifactFile {
        path: path.into(),
        size,
        sha256: fill.to_string().repeat(64),
    }
}

#[test]
fn artifacts_are_declared_resumed_capped_and_expired() {
    for b in backends() {
        let job = submit(&b, json!([{"jobtype": "unit"}])).remove(0);
        register(&b, "w", &["unit"], json!([{}]));
        register(&b, "v", &["unit"], json!([{}]));
        let running = claim(&b, "w").unwrap();
        let caps = ArtifactCaps {
            max_file: 100,
            max_job: 150,
        };
        let none = |_: &str, _: u64| false;
        let files = [
            file("a.txt", 10, 'a'),
            file("big.bin", 101, 'b'),
            file("c/d.png", 90, 'c'),
            file("e", 60, 'e'),
        ];
        let got = b
            .declare_artifacts(
                job.id,
                1,
                Uploader::Worker("w"),
                &files,
                Some(1000),
                caps,
                &none,
                b.now(),
            )
            .unwrap();
        let states: Vec<(&str, ArtifactState)> =
            got.iter().map(|a| (a.path.as_str(), a.state)).collect();
        assert_eq!(
            states,
            [
                ("a.txt", ArtifactState::Uploading),
                ("big.bin", ArtifactState::Skipped),
                ("c/d.png", ArtifactState::Uploading),
                ("e", ArtifactState::Skipped),
            ],
            "{}",
            b.name
        );
        assert!(got[1]
            .note
            .as_deref()
            .unwrap()
            .contains("--artifact-max-file"));
        assert!(got[3]
            .note
            .as_deref()
            .unwrap()
            .contains("--artifact-max-job"));
        // Another worker may not add to this attempt; the job's token may
        // only while it runs.
        assert!(matches!(
            b.declare_artifacts(
                job.id,
                1,
                Uploader::Worker("v"),
                &files[..1],
                None,
                caps,
                &none,
                b.now()
            ),
            Err(StoreError::Forbidden(_))
        ));
        assert!(matches!(
            b.declare_artifacts(
                job.id,
                2,
                Uploader::Worker("w"),
                &files[..1],
                None,
                caps,
                &none,
                b.now()
            ),
            Err(StoreError::Conflict(_))
        ));
        b.check_uploader(job.id, 1, Uploader::Job).unwrap();
        // Progress, then done; declared again, the progress stays.
        b.artifact_progress(job.id, 1, "a.txt", 4, false).unwrap();
        let again = b
            .declare_artifacts(
                job.id,
                1,
                Uploader::Worker("w"),
                &files[..1],
                Some(1000),
                caps,
                &none,
                b.now(),
            )
            .unwrap();
        assert_eq!(again[0].received, 4, "{}", b.name);
        b.artifact_progress(job.id, 1, "a.txt", 10, true).unwrap();
        assert_eq!(
            b.artifact(job.id, 1, "a.txt").unwrap().unwrap().state,
            ArtifactState::Complete
        );
        // Other content under a stored name is not taken: the stored file
        // stays, the new one is skipped saying why, and the files declared
        // with it go on.
        let clash = b
            .declare_artifacts(
                job.id,
                1,
                Uploader::Worker("w"),
                &[file("a.txt", 10, 'f'), file("b.txt", 5, 'b')],
                Some(1000),
                caps,
                &none,
                b.now(),
            )
            .unwrap();
        assert_eq!(clash[0].state, ArtifactState::Skipped, "{}", b.name);
        assert!(
            clash[0]
                .note
                .as_deref()
                .unwrap()
                .contains("stored already with other content"),
            "{}",
            b.name
        );
        assert_eq!(clash[1].state, ArtifactState::Uploading, "{}", b.name);
        let kept = b.artifact(job.id, 1, "a.txt").unwrap().unwrap();
        assert_eq!(
            (kept.state, kept.sha256.starts_with('a')),
            (ArtifactState::Complete, true),
            "{}",
            b.name
        );
        // The same bytes stored already are complete at once.
        // (A stored hash with another size is not those bytes.)
        let stored = |sha: &str, size: u64| sha.starts_with('a') && size == 10;
        b.finish(job.id, &outcome(&running, "passed", false), b.now())
            .unwrap();
        let other = submit(&b, json!([{"jobtype": "unit"}])).remove(0);
        let o = claim(&b, "w").unwrap();
        assert_eq!(o.id, other.id);
        let dup = b
            .declare_artifacts(
                other.id,
                1,
                Uploader::Job,
                &[file("copy.txt", 10, 'a')],
                None,
                caps,
                &stored,
                b.now(),
            )
            .unwrap();
        assert_eq!(dup[0].state, ArtifactState::Complete, "{}", b.name);
        assert_eq!(b.artifacts(job.id, None).unwrap().len(), 5);
        // Past keep_artifacts: gone, and their bytes are garbage once
        // nothing names them ('a' still is, by the other job).
        b.advance(2000);
        assert_eq!(b.expire_artifacts(b.now()).unwrap(), 5, "{}", b.name);
        assert!(b.artifacts(job.id, None).unwrap().is_empty());
        let mut garbage = b.artifact_garbage().unwrap();
        garbage.sort();
        let blobs: Vec<&str> = garbage
            .iter()
            .filter(|g| g.0 == "blob")
            .map(|g| g.1.as_str())
            .collect();
        assert!(
            blobs.is_empty(),
            "{}: 'a' is still named: {garbage:?}",
            b.name
        );
        assert_eq!(garbage.iter().filter(|g| g.0 == "partial").count(), 5);
        // Retention takes the other job's with it: now 'a' is garbage.
        b.finish(other.id, &outcome(&o, "passed", false), b.now())
            .unwrap();
        b.advance(1000);
        b.purge_finished(b.now(), 100).unwrap();
        let garbage = b.artifact_garbage().unwrap();
        assert!(
            garbage.contains(&("blob".to_string(), "a".repeat(64))),
            "{}: {garbage:?}",
            b.name
        );
        assert!(b.artifact_garbage().unwrap().is_empty(), "taken once");
    }
}
