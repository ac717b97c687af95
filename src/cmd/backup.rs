//! `testbot backup OUT`: save a consistent copy of the server's database
//! (SQLite's online backup, taken while the server keeps serving). A
//! server started on the copy serves the same jobs and results. The bytes
//! of artifacts are files beside the database: where the server's
//! directory of them can be read from here (the usual case: a backup taken
//! on the CI host), they are copied beside OUT, where a server on OUT
//! looks for them; otherwise the command says where they are.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::{Exit, Globals};

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the copy.
    #[arg(value_name = "OUT")]
    out: PathBuf,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let resp = g
        .client()?
        .get_raw("/api/v1/backup", Duration::from_secs(3600))?;
    let blobs: u64 = resp
        .header(crate::wire::ARTIFACT_FILES_HEADER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let blobs_dir = resp
        .header(crate::wire::ARTIFACTS_DIR_HEADER)
        .map(PathBuf::from);
    // Beside OUT, under a name of its own: never a file the user has.
    let mut tmp = a.out.clone().into_os_string();
    tmp.push(format!(".partial-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot write beside {}", a.out.display()))?;
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut head = Vec::new();
    loop {
        let n = reader.read(&mut buf).context("reading the backup")?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16)]);
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", a.out.display()));
        }
        total += n as u64;
    }
    file.sync_all()?;
    if !head.starts_with(b"SQLite format 3\0") {
        let _ = std::fs::remove_file(&tmp);
        return Err(Exit(3, "the server's answer is not an SQLite database".into()).into());
    }
    std::fs::rename(&tmp, &a.out).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("{} ({total} bytes)", a.out.display());
    if blobs > 0 {
        copy_artifacts(&a.out, blobs, blobs_dir.as_deref())?;
    }
    Ok(0)
}

/// Copies the server's artifact files beside `out` when their directory
/// is readable here; otherwise says where they are.
fn copy_artifacts(out: &Path, blobs: u64, from: Option<&Path>) -> anyhow::Result<()> {
    let to = crate::server::artifacts::default_dir(Some(out));
    match from.filter(|d| d.join("sha256").is_dir()) {
        Some(from) => {
            let (files, bytes) =
                crate::server::artifacts::copy_blobs(from, &to).with_context(|| {
                    format!(
                        "cannot copy the artifact files from {} to {}",
                        from.display(),
                        to.display()
                    )
                })?;
            println!(
                "{} ({files} artifact files, {bytes} bytes, copied from {})",
                to.display(),
                from.display()
            );
        }
        None => {
            let held = from.map_or_else(
                || "the server's --artifacts-dir".to_string(),
                |d| d.display().to_string(),
            );
            eprintln!(
                "testbot: the bytes of {blobs} artifact files are not in {}: they are in {held} \
                 on the server's machine; copy that directory to {} for a server on the copy to \
                 serve them",
                out.display(),
                to.display()
            );
        }
    }
    Ok(())
}
