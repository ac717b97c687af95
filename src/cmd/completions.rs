//! `testbot completions SHELL`: shell completions generated from the same
//! flag definitions the parser uses.

use clap::CommandFactory;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
    #[command(flatten)]
    _no_server: super::NoServer,
    #[arg(long = "token", id = "token", hide = true, value_name = "TOKEN")]
    _token: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut cmd = super::Cli::command();
    // Made whole first, then written: a write that fails is said (the
    // generator panics on one).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "testbot", &mut script);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|e| super::Exit(2, format!("cannot write to standard output: {e}")))?;
    Ok(0)
}
