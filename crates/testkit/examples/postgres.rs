//! `just postgres`: a throwaway PostgreSQL until Ctrl-C. Prints the `export DATABASE_URL=…`
//! line for it on stdout, then a comment line naming the version and the directory.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a terminal program

use std::process::ExitCode;

use testkit::TestPostgres;

#[tokio::main]
async fn main() -> ExitCode {
    let pg = match TestPostgres::start() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let version = pg
        .psql("show server_version")
        .unwrap_or_else(|e| format!("(unknown: {e})"));
    println!("export DATABASE_URL={}", pg.url());
    println!(
        "# PostgreSQL {version} in {}; Ctrl-C stops it",
        pg.dir().display()
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("waiting for Ctrl-C: {e}");
    }
    drop(pg);
    ExitCode::SUCCESS
}
