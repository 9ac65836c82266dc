//! How a test reaches the server: URLs for the superuser or any role, and SQL through psql for
//! setup and assertions.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{POSTGRES_INSTALL, TestPostgres};

impl TestPostgres {
    /// `postgres://postgres:<password>@127.0.0.1:<port>/postgres`: the superuser, signing in
    /// with its password over TCP.
    #[must_use]
    pub fn url(&self) -> String {
        self.url_as("postgres", &self.password, "postgres")
    }

    /// The URL of `database` on this server for `user` signing in with `password`.
    #[must_use]
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(database)
        )
    }

    /// Runs `sql` with psql as the superuser and returns what it printed, trimmed (unaligned,
    /// tuples only: `select 1` gives `1`; one line per row, columns separated by `|`).
    ///
    /// # Errors
    /// If psql cannot run or exits non-zero (a failed statement stops it); the message holds its
    /// stderr.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let mut command = self.psql_command();
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .env("PGPASSWORD", &self.password);
        run_psql(command, sql)
    }

    /// Runs `sql` with psql connected to `url` (say from [`TestPostgres::url_as`]), as
    /// [`TestPostgres::psql`] does.
    ///
    /// # Errors
    /// As [`TestPostgres::psql`]; a wrong password gives psql's "password authentication failed".
    pub fn psql_url(&self, url: &str, sql: &str) -> Result<String, String> {
        let mut command = self.psql_command();
        command.args(["-d", url, "-c", sql]);
        run_psql(command, sql)
    }

    /// A client program (`psql`, `pg_isready`) beside the server's, else the one in /usr/bin
    /// (`postgresql-client`).
    pub(super) fn client(&self, program: &str) -> Command {
        let beside = self.bin.join(program);
        Command::new(if beside.is_file() {
            beside
        } else {
            PathBuf::from("/usr/bin").join(program)
        })
    }

    fn psql_command(&self) -> Command {
        let mut command = self.client("psql");
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .env_clear()
            .env("LC_ALL", "C")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        command
    }
}

fn run_psql(mut command: Command, sql: &str) -> Result<String, String> {
    let output = command.output().map_err(|e| {
        format!("running psql ({e}); it comes with `{POSTGRES_INSTALL}` (or postgresql-client)")
    })?;
    if !output.status.success() {
        return Err(format!(
            "psql failed ({}) on {sql:?}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `text` with everything but RFC 3986's unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(percent_encode("a-b_c.d~9"), "a-b_c.d~9");
        assert_eq!(percent_encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
    }
}
