//! `testbot db copy`: move a testbot database between SQLite and
//! PostgreSQL.

use std::path::PathBuf;

use super::{Exit, Globals};

/// Where `serve --db DB` keeps artifact files when not told.
fn artifacts_dir(db: &str) -> PathBuf {
    crate::server::Database::parse(db).default_artifacts_dir()
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Copy a whole testbot database (jobs, builds, results, logs,
    /// workers, history) into an empty one: SQLite to PostgreSQL or back.
    /// Stop the servers on both first.
    Copy {
        /// The database to copy: a SQLite file (PATH or sqlite:PATH) or
        /// postgres://USER@HOST:PORT/DB.
        #[arg(long, value_name = "PATH_OR_URL")]
        from: String,
        /// The empty database to copy into (created if missing: a SQLite
        /// file; a PostgreSQL database must exist, with no testbot rows).
        #[arg(long, value_name = "PATH_OR_URL")]
        to: String,
        /// Where the artifact files of --from are (default: where `serve`
        /// keeps them: beside a SQLite file, else ./testbot-artifacts).
        #[arg(long, value_name = "DIR")]
        from_artifacts: Option<PathBuf>,
        /// Where to copy them for --to (default: as for --from-artifacts).
        #[arg(long, value_name = "DIR")]
        to_artifacts: Option<PathBuf>,
    },
}

pub fn run(_g: &Globals, a: Args) -> anyhow::Result<u8> {
    match a.command {
        Command::Copy {
            from,
            to,
            from_artifacts,
            to_artifacts,
        } => {
            let copied = crate::server::store::copy::copy(&from, &to)
                .map_err(|e| Exit(2, format!("{e:#}")))?;
            println!(
                "copied {copied} from {} to {}",
                crate::server::Database::shown(&from),
                crate::server::Database::shown(&to)
            );
            // The artifacts' bytes are files beside the database.
            let from_dir = from_artifacts.unwrap_or_else(|| artifacts_dir(&from));
            let to_dir = to_artifacts.unwrap_or_else(|| artifacts_dir(&to));
            let same = match (from_dir.canonicalize(), to_dir.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => from_dir == to_dir,
            };
            if !same {
                let (files, bytes) = crate::server::artifacts::copy_blobs(&from_dir, &to_dir)
                    .map_err(|e| {
                        Exit(
                            1,
                            format!(
                                "the database was copied, but not the artifact files from {} \
                                 to {}: {e}",
                                from_dir.display(),
                                to_dir.display()
                            ),
                        )
                    })?;
                if files > 0 {
                    println!(
                        "copied {files} artifact files ({bytes} bytes) from {} to {}",
                        from_dir.display(),
                        to_dir.display()
                    );
                }
            }
            Ok(0)
        }
    }
}
