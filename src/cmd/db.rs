//! `testbot db copy`: move a testbot database between SQLite and
//! PostgreSQL.

use super::{Exit, Globals};

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
    },
}

pub fn run(_g: &Globals, a: Args) -> anyhow::Result<u8> {
    match a.command {
        Command::Copy { from, to } => {
            let copied = crate::server::store::copy::copy(&from, &to)
                .map_err(|e| Exit(2, format!("{e:#}")))?;
            println!(
                "copied {copied} from {} to {}",
                crate::server::Database::shown(&from),
                crate::server::Database::shown(&to)
            );
            Ok(0)
        }
    }
}
