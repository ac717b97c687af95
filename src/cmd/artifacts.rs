//! `testbot artifacts`: list a job's artifacts, download them (each
//! checked against its SHA-256, never written outside the target folder),
//! or, inside a job, upload files with the job's own token.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use super::table::Table;
use super::{Exit, Globals};
use crate::client::ClientError;
use crate::wire::*;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The job whose artifacts to list or download.
    #[arg(value_name = "JOB_ID")]
    job: Option<i64>,
    /// Of this attempt [default: the latest one that has artifacts].
    #[arg(long, value_name = "N")]
    attempt: Option<u32>,
    /// Download them into DIR, with their paths, each checked against its
    /// SHA-256.
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
    /// With --download: only the paths this glob matches (`*.png`,
    /// `reports/**`).
    #[arg(value_name = "PATTERN", requires = "download")]
    pattern: Option<String>,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Inside a job: upload files as artifacts of this attempt now, each
    /// named by its path relative to the current directory (the job
    /// directory, unless the command moved), else by its file name.
    Upload {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    if let Some(Command::Upload { paths }) = a.command {
        return upload(g, &paths);
    }
    let Some(job) = a.job else {
        return Err(Exit(
            2,
            "name a job: testbot artifacts JOB_ID [--download DIR [PATTERN]], or \
             testbot artifacts upload PATH... inside a job"
                .into(),
        )
        .into());
    };
    let client = g.client()?;
    let q = a
        .attempt
        .map(|n| format!("?attempt={n}"))
        .unwrap_or_default();
    let list: Vec<Artifact> = client.get(&format!("/api/v1/jobs/{job}/artifacts{q}"))?;
    let Some(dir) = a.download else {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else if list.is_empty() {
            println!("job {job} has no artifacts");
        } else {
            let mut t = Table::new(&["path", "size", "state", "sha256"]);
            for f in &list {
                let state = match f.state {
                    ArtifactState::Uploading => {
                        format!("uploading {}%", f.received * 100 / f.size.max(1))
                    }
                    s => s.as_str().to_string(),
                };
                t.row(vec![
                    f.path.clone(),
                    f.size.to_string(),
                    state,
                    f.sha256.clone(),
                ]);
            }
            t.print();
        }
        return Ok(0);
    };
    let pattern = match &a.pattern {
        Some(p) => Some(glob::Pattern::new(p).map_err(|e| Exit(2, format!("PATTERN {p:?}: {e}")))?),
        None => None,
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Exit(2, format!("cannot make {}: {e}", dir.display())))?;
    let mut failed = 0;
    let mut got = 0;
    let mut away = false;
    for f in &list {
        if pattern.as_ref().is_some_and(|p| !p.matches(&f.path)) {
            continue;
        }
        if f.state != ArtifactState::Complete {
            eprintln!(
                "testbot: {} is {}; not downloaded",
                f.path,
                f.state.as_str()
            );
            failed += 1;
            continue;
        }
        match download(&client, job, f, &dir) {
            Ok(path) => {
                println!("{}", path.display());
                got += 1;
            }
            Err(e) => {
                eprintln!("testbot: {}: {e:#}", f.path);
                failed += 1;
                // The server gone or failing mid-download is exit 3, as
                // for every command.
                away |= matches!(
                    e.downcast_ref::<ClientError>(),
                    Some(ClientError::Unreachable { .. } | ClientError::Failing { .. })
                );
            }
        }
    }
    if got == 0 && failed == 0 {
        eprintln!("testbot: no artifact of job {job} matched");
    }
    Ok(if away { 3 } else { u8::from(failed > 0) })
}

/// Where an artifact lands in `dir`: refused if its path would lead out.
pub fn target(dir: &Path, path: &str) -> anyhow::Result<PathBuf> {
    check_artifact_path(path).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    let rel = Path::new(path);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        anyhow::bail!(
            "refused: {path:?} would be written outside {}",
            dir.display()
        );
    }
    Ok(dir.join(rel))
}

fn download(
    client: &crate::client::Client,
    job: i64,
    f: &Artifact,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let dest = target(dir, &f.path)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
        // A link planted among the folders must not lead the file out.
        let real = parent.canonicalize()?;
        if !real.starts_with(dir.canonicalize()?) {
            anyhow::bail!(
                "refused: {} leads outside {}",
                parent.display(),
                dir.display()
            );
        }
    }
    let path: String = f
        .path
        .split('/')
        .map(super::test_queue::query_escape)
        .collect::<Vec<_>>()
        .join("/");
    let raw = client.get_raw(
        &format!("/api/v1/jobs/{job}/artifacts/{path}?attempt={}", f.attempt),
        std::time::Duration::from_secs(24 * 3600),
    )?;
    let tmp = dest.with_file_name(format!(
        ".{}.testbot-part",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let url = format!("job {job}'s artifact {}", f.path);
    let mut h = sha2::Sha256::new();
    let mut n_total = 0u64;
    let fetched = (|| -> anyhow::Result<()> {
        let mut out = std::fs::File::create(&tmp)?;
        let mut reader = raw.into_reader();
        use sha2::Digest;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // The server's side failing is told apart from this disk's.
            let n = reader
                .read(&mut buf)
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    detail: e.to_string(),
                    connect: false,
                })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            n_total += n as u64;
        }
        out.sync_all()?;
        Ok(())
    })();
    if let Err(e) = fetched {
        // No half file left behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    use sha2::Digest;
    let sha: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if sha != f.sha256 || n_total != f.size {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!(
            "the download ({n_total} bytes, SHA-256 {sha}) does not match the artifact ({} bytes, {})",
            f.size,
            f.sha256
        );
    }
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| {
        Exit(
            2,
            format!("{name} is not set: `testbot artifacts upload` runs inside a job, whose worker sets it"),
        )
        .into()
    })
}

fn upload(g: &Globals, paths: &[PathBuf]) -> anyhow::Result<u8> {
    let token = env("TESTBOT_JOB_TOKEN")?;
    let job: i64 = env("TESTBOT_JOB_ID")?
        .parse()
        .map_err(|_| Exit(2, "TESTBOT_JOB_ID is not a job id".into()))?;
    let attempt: u32 = env("TESTBOT_ATTEMPT")?
        .parse()
        .map_err(|_| Exit(2, "TESTBOT_ATTEMPT is not an attempt number".into()))?;
    let client = Globals {
        server: g.server.clone(),
        token: Some(token),
        ca_file: g.ca_file.clone(),
    }
    .client()?;
    let cwd = std::env::current_dir()?;
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| Exit(2, format!("cannot read {}: {e}", p.display())))?;
        if !meta.is_file() {
            return Err(Exit(2, format!("{} is not a file", p.display())).into());
        }
        let abs = p.canonicalize()?;
        // Named as given: a link keeps its own name (its directories are
        // resolved, its last part is not).
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let named = match p.file_name() {
            Some(f) => parent.canonicalize()?.join(f),
            None => abs.clone(),
        };
        let name = match named.strip_prefix(cwd.canonicalize()?) {
            Ok(rel) => rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
            Err(_) => named
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        check_artifact_path(&name).map_err(|e| Exit(2, format!("{}: {e}", p.display())))?;
        let sha = crate::worker::artifacts::sha256_file(&abs)?;
        files.push((
            abs,
            ArtifactFile {
                path: name,
                size: meta.len(),
                sha256: sha,
            },
        ));
    }
    let decl = ArtifactDeclaration {
        attempt,
        worker: String::new(),
        files: files.iter().map(|f| f.1.clone()).collect(),
        keep_ms: None,
    };
    // A server that restarts or a connection that drops while files go
    // up: declared again (the answer says how much of each the server
    // holds), each upload resumed from there, for up to two minutes.
    let transient = |e: &ClientError| match e {
        ClientError::Unreachable { .. } => true,
        ClientError::Failing { status, .. } => matches!(status, 502..=504),
        ClientError::Refused { status, .. } => matches!(status, 400 | 409),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut pause = std::time::Duration::from_millis(250);
    let mut said = std::collections::HashSet::new();
    let mut failed = false;
    loop {
        let wait = |e: &ClientError, pause: &mut std::time::Duration| {
            eprintln!("testbot: {e}; trying again");
            std::thread::sleep(*pause);
            *pause = (*pause * 2).min(std::time::Duration::from_secs(5));
        };
        let declared: Result<ArtifactsDeclared, ClientError> =
            client.post(&format!("/api/v1/jobs/{job}/artifacts"), &decl);
        let answer = match declared {
            Ok(a) => a,
            Err(e @ ClientError::Unreachable { .. }) | Err(e @ ClientError::Failing { .. })
                if transient(&e) && std::time::Instant::now() < deadline =>
            {
                wait(&e, &mut pause);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut again = None;
        for a in &answer.files {
            match a.state {
                ArtifactState::Complete => {
                    if said.insert(a.path.clone()) {
                        println!("{} stored", a.path);
                    }
                }
                ArtifactState::Skipped => {
                    if said.insert(a.path.clone()) {
                        eprintln!(
                            "testbot: {} skipped: {}",
                            a.path,
                            a.note.as_deref().unwrap_or("over a limit")
                        );
                        failed = true;
                    }
                }
                ArtifactState::Uploading => {
                    let (abs, _) = files
                        .iter()
                        .find(|f| f.1.path == a.path)
                        .expect("declared files come back");
                    let mut file = std::fs::File::open(abs)?;
                    use std::io::Seek;
                    file.seek(std::io::SeekFrom::Start(a.received))?;
                    let left = a.size.saturating_sub(a.received);
                    let path: String = a
                        .path
                        .split('/')
                        .map(super::test_queue::query_escape)
                        .collect::<Vec<_>>()
                        .join("/");
                    let sent: Result<Artifact, ClientError> = client.put_reader(
                        &format!(
                            "/api/v1/jobs/{job}/artifacts/{path}?attempt={attempt}&offset={}",
                            a.received
                        ),
                        &mut file.take(left),
                        left,
                    );
                    match sent {
                        Ok(_) => {
                            said.insert(a.path.clone());
                            println!("{} stored", a.path);
                        }
                        Err(e) if transient(&e) && std::time::Instant::now() < deadline => {
                            again = Some(e);
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        match again {
            Some(e) => wait(&e, &mut pause),
            None => break,
        }
    }
    Ok(u8::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_never_leave_their_folder() {
        let dir = Path::new("out");
        assert_eq!(target(dir, "a/b.txt").unwrap(), Path::new("out/a/b.txt"));
        for bad in ["../x", "/etc/passwd", "a/../../x", "./a"] {
            assert!(target(dir, bad).is_err(), "{bad}");
        }
    }
}
