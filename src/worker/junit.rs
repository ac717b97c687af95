//! Reading the JUnit XML a job's command left behind into the result:
//! counts, each test's duration, and the failing tests with their messages.

use std::path::{Path, PathBuf};

use crate::wire::{TestFailure, TestReport};

/// The files to read: every `.xml` below `junit_dir`, and what `pattern`
/// (relative to `job_dir`) matches.
pub fn find_files(junit_dir: &Path, job_dir: &Path, pattern: Option<&str>) -> Vec<PathBuf> {
    find_files_and_more(junit_dir, job_dir, pattern).0
}

/// [`find_files`], and whether `junit_dir` held anything at all (or could
/// not be read).
pub fn find_files_and_more(
    junit_dir: &Path,
    job_dir: &Path,
    pattern: Option<&str>,
) -> (Vec<PathBuf>, bool) {
    let mut files = Vec::new();
    let any = collect_xml(junit_dir, &mut files);
    if let Some(p) = pattern {
        let full = job_dir.join(p);
        if let Ok(paths) = glob::glob(&full.to_string_lossy()) {
            files.extend(paths.flatten().filter(|p| p.is_file()));
        }
    }
    files.sort();
    files.dedup();
    (files, any)
}

/// Adds the `.xml` files below `dir`; says whether `dir` held anything
/// (or could not be read: then it needs a look, too).
fn collect_xml(dir: &Path, out: &mut Vec<PathBuf>) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    let mut any = false;
    for e in entries.flatten() {
        any = true;
        let p = e.path();
        // Directories linked to are not followed: a link to `..` would loop.
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_xml(&p, out);
        } else if p.extension().is_some_and(|x| x == "xml") {
            out.push(p);
        }
    }
    any
}

/// Reads the files into one report; `None` when there were none.
pub fn read(files: &[PathBuf]) -> Option<TestReport> {
    if files.is_empty() {
        return None;
    }
    let mut r = TestReport::default();
    for f in files {
        match parse_file(f) {
            Ok(suites) => {
                for s in &suites.suites {
                    add_suite(&mut r, s);
                }
            }
            Err(e) => r.unreadable.push(format!(
                "{}: {e}",
                f.file_name().unwrap_or_default().to_string_lossy()
            )),
        }
    }
    Some(r)
}

/// The most of one JUnit file that is read.
pub const FILE_MAX: u64 = 64 << 20;

/// The deepest nesting of elements read: JUnit nests a few levels (suites
/// in suites, cases, failures); the parser recurses per level, and a file
/// nested thousands deep would overflow the worker's stack.
const DEPTH_MAX: usize = 64;

/// Reads and parses one JUnit file, guarded like every file a job leaves
/// (regular, at most [`FILE_MAX`]) and refused when it nests deeper than
/// [`DEPTH_MAX`].
fn parse_file(f: &Path) -> Result<junit_parser::TestSuites, String> {
    let bytes = super::files::read_left_behind(f, FILE_MAX).map_err(|e| match e {
        super::files::LeftBehind::Missing => "no such file".to_string(),
        super::files::LeftBehind::Unreadable(why) => why,
    })?;
    check_depth(&bytes)?;
    junit_parser::from_reader(&bytes[..]).map_err(|e| format!("not JUnit XML: {e}"))
}

/// Refuses XML whose elements nest deeper than [`DEPTH_MAX`]; syntax
/// errors are left for the parser to name.
fn check_depth(bytes: &[u8]) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(_)) => {
                depth += 1;
                if depth > DEPTH_MAX {
                    return Err(format!(
                        "elements nest more than {DEPTH_MAX} levels deep; not read"
                    ));
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        buf.clear();
    }
}

fn add_suite(r: &mut TestReport, s: &junit_parser::TestSuite) {
    for c in &s.cases {
        let name = match &c.classname {
            Some(class) if !class.is_empty() => format!("{class}.{}", c.original_name),
            _ => c.original_name.clone(),
        };
        r.total += 1;
        r.durations
            .insert(name.clone(), (c.time * 1000.0).round().max(0.0) as u64);
        use junit_parser::TestStatus::*;
        let (kind, message) = match &c.status {
            Success => {
                r.passed += 1;
                continue;
            }
            Skipped(_) => {
                r.skipped += 1;
                r.skipped_tests.push(name);
                continue;
            }
            Failure(f) => {
                r.failed += 1;
                ("failure", capped(failure_text(&f.message, &f.text)))
            }
            Error(e) => {
                r.errors += 1;
                ("error", capped(failure_text(&e.message, &e.text)))
            }
        };
        r.failures.push(TestFailure {
            name,
            kind: kind.into(),
            message,
        });
    }
    for inner in &s.suites {
        add_suite(r, inner);
    }
}

/// One test case of a JUnit file, for matching to a runner's test ids.
#[derive(Debug, Clone)]
pub struct Case {
    pub classname: String,
    pub name: String,
    pub file: Option<String>,
    pub outcome: crate::wire::TestOutcome,
    pub ms: u64,
    pub message: Option<String>,
}

impl Case {
    /// The names a runner may give this case, most specific first:
    /// `FILE::NAME`, `CLASSNAME.NAME`, `CLASSNAME::NAME`, `NAME`.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &self.file {
            out.push(format!("{f}::{}", self.name));
        }
        if !self.classname.is_empty() {
            out.push(format!("{}.{}", self.classname, self.name));
            out.push(format!("{}::{}", self.classname, self.name));
        }
        out.push(self.name.clone());
        out
    }
}

/// An id with its separators (`/`, `::`, a `.py` before `::`) made dots:
/// how a pytest node id (`tests/test_a.py::TestC::test_x`) and its JUnit
/// name (`tests.test_a.TestC.test_x`) meet.
pub fn normalized(id: &str) -> String {
    id.replace(".py::", ".")
        .replace("::", ".")
        .replace('/', ".")
}

/// Every test case in `files`, or the first file that cannot be read.
pub fn cases(files: &[PathBuf]) -> Result<Vec<Case>, String> {
    use crate::wire::TestOutcome;
    fn walk(s: &junit_parser::TestSuite, out: &mut Vec<Case>) {
        for c in &s.cases {
            use junit_parser::TestStatus::*;
            let (outcome, message) = match &c.status {
                Success => (TestOutcome::Passed, None),
                Skipped(_) => (TestOutcome::Skipped, None),
                Failure(f) => (TestOutcome::Failed, Some(failure_text(&f.message, &f.text))),
                Error(e) => (TestOutcome::Error, Some(failure_text(&e.message, &e.text))),
            };
            out.push(Case {
                classname: c.classname.clone().unwrap_or_default(),
                name: c.original_name.clone(),
                file: c.file.clone(),
                outcome,
                ms: (c.time * 1000.0).round().max(0.0) as u64,
                message,
            });
        }
        for inner in &s.suites {
            walk(inner, out);
        }
    }
    let mut out = Vec::new();
    for f in files {
        let suites = parse_file(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for s in &suites.suites {
            walk(s, &mut out);
        }
    }
    Ok(out)
}

/// A failure's message and its text, both when both say something.
fn failure_text(message: &str, text: &str) -> String {
    match (message.trim(), text.trim()) {
        ("", t) => t.to_string(),
        (m, "") => m.to_string(),
        (m, t) if t.contains(m) => t.to_string(),
        (m, t) => format!("{m}\n{t}"),
    }
}

/// A failure's text as a job's result keeps it: its message, then the
/// failure's full text (a traceback), at most [`FAILURE_TEXT`] characters.
fn capped(text: String) -> String {
    match text.char_indices().nth(FAILURE_TEXT) {
        Some((at, _)) => format!("{}\n… (cut at {FAILURE_TEXT} characters)", &text[..at]),
        None => text,
    }
}

/// The most of one failure's text a job's result keeps.
const FAILURE_TEXT: usize = 8000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_nested_too_deep_is_unreadable_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("deep.xml");
        let xml = format!(
            "<testsuites>{}<testcase name=\"t\"/>{}</testsuites>",
            "<testsuite>".repeat(5000),
            "</testsuite>".repeat(5000)
        );
        std::fs::write(&deep, xml).unwrap();
        let r = read(&[deep]).unwrap();
        assert_eq!(r.total, 0);
        assert!(
            r.unreadable[0].contains("levels deep"),
            "{:?}",
            r.unreadable
        );
        // A link to an endless device is not read.
        let zero = dir.path().join("zero.xml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let r = read(&[zero]).unwrap();
        assert!(r.unreadable[0].contains("regular"), "{:?}", r.unreadable);
    }

    #[test]
    fn counts_durations_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let xml = r#"<?xml version="1.0"?>
<testsuites><testsuite name="core" tests="4" failures="1" errors="1" skipped="1">
  <testcase classname="core.math" name="adds" time="0.25"/>
  <testcase classname="core.math" name="divides" time="1.5"><failure message="expected 2, got 3">trace</failure></testcase>
  <testcase classname="core.io" name="reads" time="0.1"><error message="boom"/></testcase>
  <testcase name="later" time="0"><skipped/></testcase>
</testsuite></testsuites>"#;
        std::fs::write(dir.path().join("a.xml"), xml).unwrap();
        std::fs::write(dir.path().join("bad.xml"), "<not junit").unwrap();
        let files = find_files(dir.path(), dir.path(), None);
        assert_eq!(files.len(), 2);
        let r = read(&files).unwrap();
        assert_eq!(
            (r.total, r.passed, r.failed, r.errors, r.skipped),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(r.durations["core.math.divides"], 1500);
        assert_eq!(r.failures[0].name, "core.math.divides");
        assert_eq!(r.failures[0].message, "expected 2, got 3\ntrace");
        assert_eq!(r.failures[1].kind, "error");
        assert_eq!(r.unreadable.len(), 1);
    }

    #[test]
    fn no_files_no_report() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&find_files(dir.path(), dir.path(), Some("reports/*.xml"))).is_none());
    }
}
