//! Where the server comes from (`PG_BIN`, else Debian's `/usr/lib/postgresql/*/bin`) and which
//! account runs it when the tests run as root, as `initdb` and `postgres` refuse to.

use std::path::PathBuf;

/// The command that installs the server binaries.
pub const POSTGRES_INSTALL: &str = "apt-get install postgresql";

/// Where the server binaries are: `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` that
/// has `initdb`.
#[must_use]
pub fn postgres_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(bin));
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("bin/initdb").is_file())
        .max_by_key(|entry| version_key(&entry.file_name().to_string_lossy()))
        .map(|entry| entry.path().join("bin"))
}

/// `"9.6"` → `[9, 6]`, so that 15 sorts after 9.6.
fn version_key(name: &str) -> Vec<u32> {
    name.split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// [`postgres_bin`], if it has `initdb`.
pub(super) fn server_bin() -> Result<PathBuf, String> {
    postgres_bin()
        .filter(|bin| bin.join("initdb").is_file())
        .ok_or_else(|| {
            let place = std::env::var("PG_BIN").unwrap_or("/usr/lib/postgresql/*/bin".into());
            format!(
                "no PostgreSQL server binaries (initdb) in {place}; install them with \
                 `{POSTGRES_INSTALL}` (or point PG_BIN at a directory with initdb)"
            )
        })
}

/// The account the server runs under when the tests run as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Account {
    /// User id.
    pub(super) uid: u32,
    /// Group id.
    pub(super) gid: u32,
}

/// The uid and gid of `name` in the text of `/etc/passwd`.
fn passwd_account(passwd: &str, name: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [user, _, uid, gid, ..] = fields[..] else {
            return None;
        };
        if user != name {
            return None;
        }
        Some(Account {
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
        })
    })
}

/// `None` unless this process runs as root; then `postgres`, else `nobody`.
pub(super) fn server_account() -> Result<Option<Account>, String> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    ["postgres", "nobody"]
        .iter()
        .find_map(|name| passwd_account(&passwd, name))
        .map(Some)
        .ok_or_else(|| {
            "running as root, and /etc/passwd has neither `postgres` nor `nobody` to run \
             PostgreSQL as; add one (`useradd -r postgres`) or run the tests as another user"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_come_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            passwd_account(passwd, "postgres"),
            Some(Account { uid: 101, gid: 104 })
        );
        assert_eq!(
            passwd_account(passwd, "nobody"),
            Some(Account {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(passwd_account(passwd, "post"), None);
        assert_eq!(
            passwd_account("postgres:x:abc:1::/:/bin/sh", "postgres"),
            None
        );
    }

    #[test]
    fn newer_versions_sort_later() {
        assert!(version_key("15") > version_key("9.6"));
        assert!(version_key("16") > version_key("15"));
    }
}
