//! Results too big to keep are trimmed, never refused: what both the
//! worker (before sending) and the server (on receipt) do to one.

use super::*;

impl Outcome {
    /// Makes the test report and the result data each fit in `max` bytes
    /// of JSON, so that a result is never refused for its size: first the
    /// per-test durations go, then failure messages are shortened, then
    /// failures past the first thousand are dropped; result data that is
    /// still too big is replaced by a note. What was trimmed is said in
    /// `data.trimmed`. Returns whether anything was.
    pub fn trim_to(&mut self, max: usize) -> bool {
        let size = |v: &dyn erased::Json| v.json_len();
        let mut notes: Vec<String> = Vec::new();
        if let Some(t) = self.tests.as_mut() {
            if size(t) > max && !t.durations.is_empty() {
                notes.push(format!(
                    "the durations of {} tests were dropped",
                    t.durations.len()
                ));
                t.durations.clear();
            }
            if size(t) > max {
                for f in &mut t.failures {
                    if f.message.len() > 1024 {
                        let mut cut = 1024;
                        while !f.message.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        f.message.truncate(cut);
                        f.message.push_str(" [...]");
                    }
                }
                notes.push("failure messages were cut to 1 KiB".into());
            }
            if size(t) > max && t.failures.len() > 1000 {
                notes.push(format!(
                    "{} failures past the first 1000 were dropped",
                    t.failures.len() - 1000
                ));
                t.failures.truncate(1000);
            }
            if size(t) > max {
                notes.push("the test report was dropped".into());
                self.tests = None;
            }
        }
        if size(&self.data) > max {
            let n = size(&self.data);
            self.data = Extra::new();
            self.data.insert(
                "result_file_error".into(),
                format!("the result file's JSON is {n} bytes, over the {max} kept; not kept")
                    .into(),
            );
        }
        if notes.is_empty() {
            return false;
        }
        let note = format!("to keep the result under {max} bytes, {}", notes.join("; "));
        self.data.insert("trimmed".into(), note.into());
        true
    }
}

/// The size of a value as JSON, for [`Outcome::trim_to`].
mod erased {
    pub trait Json {
        fn json_len(&self) -> usize;
    }
    impl<T: serde::Serialize> Json for T {
        fn json_len(&self) -> usize {
            serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_too_big_is_trimmed_and_says_so() {
        let mut report = TestReport {
            total: 40_000,
            failed: 2_000,
            ..Default::default()
        };
        for i in 0..40_000 {
            report
                .durations
                .insert(format!("tests/test_module_{i}.py::test_case"), i);
        }
        for i in 0..2_000 {
            report.failures.push(TestFailure {
                name: format!("t{i}"),
                kind: "failure".into(),
                message: "x".repeat(4000),
            });
        }
        let mut o: Outcome = serde_json::from_str(r#"{"attempt":1,"state":"failed"}"#).unwrap();
        o.tests = Some(report);
        o.data.insert("big".into(), "y".repeat(5 << 20).into());
        assert!(o.trim_to(2 << 20));
        let t = o.tests.as_ref().unwrap();
        assert!(serde_json::to_vec(t).unwrap().len() <= 2 << 20);
        assert_eq!((t.total, t.failed), (40_000, 2_000), "the counts stay");
        assert!(t.durations.is_empty() && t.failures.len() == 1000);
        let note = o.data["trimmed"].as_str().unwrap();
        assert!(
            note.contains("40000 tests") && note.contains("1000"),
            "{note}"
        );
        assert!(o.data["result_file_error"]
            .as_str()
            .unwrap()
            .contains("not kept"));
        let mut small: Outcome = serde_json::from_str(r#"{"attempt":1,"state":"passed"}"#).unwrap();
        assert!(!small.trim_to(1 << 20));
        assert!(small.data.is_empty());
    }
}
