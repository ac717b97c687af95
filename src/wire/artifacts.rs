//! The bodies of artifacts: files a job leaves behind, declared by the
//! worker (or the job itself), uploaded with offsets, listed and fetched.

use serde::{Deserialize, Serialize};

/// A file to upload: its path relative to the job directory, its size and
/// SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// `POST /api/v1/jobs/{id}/artifacts`: the files an attempt will upload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArtifactDeclaration {
    pub attempt: u32,
    /// The worker sending (with a worker token); empty with a job token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,
    pub files: Vec<ArtifactFile>,
    /// Keep them no longer than this many milliseconds (the jobtype's
    /// `keep_artifacts`), if shorter than the server's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_ms: Option<u64>,
}

/// Where an artifact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactState {
    /// Declared; `received` bytes of it are stored so far.
    Uploading,
    /// Stored whole, its SHA-256 checked.
    Complete,
    /// Not kept (over a size cap): `note` says why.
    Skipped,
}

impl ArtifactState {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactState::Uploading => "uploading",
            ArtifactState::Complete => "complete",
            ArtifactState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<ArtifactState> {
        [
            ArtifactState::Uploading,
            ArtifactState::Complete,
            ArtifactState::Skipped,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// An artifact as the server lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub attempt: u32,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub state: ArtifactState,
    /// Bytes stored so far.
    pub received: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it is deleted (RFC 3339), if sooner than the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The answer to a declaration: each file as it stands now (an upload
/// resumes at `received`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArtifactsDeclared {
    pub files: Vec<Artifact>,
}

/// Query of `PUT /api/v1/jobs/{id}/artifacts/{path}`: the body is the
/// file's bytes from `offset` on (all of the rest, or a part).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactUpload {
    pub attempt: u32,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub worker: String,
}

/// Whether `path` is a safe artifact name: relative, `/`-separated, no
/// empty, `.` or `..` part, no NUL, backslash or control character, at
/// most 1024 bytes. The reason when not.
pub fn check_artifact_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 1024 {
        return Err(format!(
            "an artifact path must be 1 to 1024 bytes, not {}",
            path.len()
        ));
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; artifact paths are relative to the job directory"
        ));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("{path:?} has a control character or a backslash"));
    }
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(format!("{path:?} has an empty, '.' or '..' part"));
    }
    Ok(())
}

/// Whether `s` is a SHA-256 in lowercase hex.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The media type an artifact is served with, by its extension: images as
/// themselves (shown inline), text as plain text, anything else (HTML and
/// SVG too) as bytes to download.
pub fn artifact_media_type(path: &str) -> (&'static str, bool) {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => ("image/png", true),
        "jpg" | "jpeg" => ("image/jpeg", true),
        "gif" => ("image/gif", true),
        "webp" => ("image/webp", true),
        "txt" | "log" | "out" | "err" | "csv" | "md" => ("text/plain; charset=utf-8", false),
        "json" => ("application/json", false),
        "xml" => ("application/xml", false),
        "gz" | "tgz" => ("application/gzip", false),
        "zip" => ("application/zip", false),
        _ => ("application/octet-stream", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_stay_inside_the_job() {
        for ok in [
            "a.txt",
            "reports/x/y.xml",
            "core.1234",
            "weird name (1).png",
        ] {
            assert!(check_artifact_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "./a",
            "a\\b",
            "a\nb",
            "a/",
        ] {
            assert!(check_artifact_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn html_is_never_served_as_html() {
        assert_eq!(artifact_media_type("shot.PNG"), ("image/png", true));
        assert_eq!(
            artifact_media_type("report.html").0,
            "application/octet-stream"
        );
        assert_eq!(
            artifact_media_type("icon.svg").0,
            "application/octet-stream"
        );
        assert!(!artifact_media_type("log.txt").1);
    }
}
