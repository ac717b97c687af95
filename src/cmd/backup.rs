//! `testbot backup OUT`: save a consistent copy of the server's database
//! (SQLite's online backup, taken while the server keeps serving). A
//! server started on the copy serves the same jobs and results.

use std::io::{Read, Write};
use std::path::PathBuf;
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
    let tmp = a.out.with_extension("partial");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
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
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
    file.sync_all()?;
    if !head.starts_with(b"SQLite format 3\0") {
        let _ = std::fs::remove_file(&tmp);
        return Err(Exit(3, "the server's answer is not an SQLite database".into()).into());
    }
    std::fs::rename(&tmp, &a.out).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("{} ({total} bytes)", a.out.display());
    Ok(0)
}
