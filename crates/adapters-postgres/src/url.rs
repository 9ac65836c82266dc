//! `DATABASE_URL`, as the PostgreSQL ecosystem writes it (`postgres://user:password@host:port/db
//! ?sslmode=…`), parsed once into the client's configuration and the TLS mode.
//!
//! `sslmode` takes libpq's meanings for the modes this client has: `disable`, `prefer` (the
//! default: TLS when the server offers it, the certificate not checked), `require` (TLS, the
//! certificate not checked) and `verify-full` (TLS, the certificate checked against the web's
//! root authorities, or `sslrootcert=FILE`, and the host name). The password never appears in
//! `Debug`, logs or `check-config`.

use std::fmt;
use std::str::FromStr;

/// How the connection is secured (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, without checking its certificate.
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS always, the certificate chain and host name checked.
    VerifyFull,
}

/// A parsed `DATABASE_URL`.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The client configuration (TLS mode not yet applied).
    pub(crate) config: tokio_postgres::Config,
    /// The TLS mode.
    pub tls: TlsMode,
    /// `sslrootcert`: a PEM file of root certificates for `verify-full`.
    pub root_cert: Option<String>,
    /// The URL as given, for display with its password hidden.
    text: String,
}

impl DatabaseUrl {
    /// The URL with its password replaced by `(hidden)`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.text.split_once("://") else {
            return "(unparsed)".to_owned();
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        match rest[..end].rsplit_once('@') {
            Some((user_info, host)) => {
                let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
                format!("{scheme}://{user}:(hidden)@{host}{}", &rest[end..])
            }
            None => self.text.clone(),
        }
    }

    /// The user name the URL connects as.
    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("url", &self.redacted())
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    /// Parses a `postgres://` or `postgresql://` URL.
    fn from_str(text: &str) -> Result<Self, String> {
        const ACCEPTED: &str = "postgres://user:password@host:port/database[?sslmode=disable|prefer|require|verify-full]";
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(ACCEPTED.to_owned());
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", mode)) => tls = tls_mode(mode)?,
                Some(("sslrootcert", path)) => root_cert = Some(path.to_owned()),
                _ => kept.push(pair),
            }
        }
        let client_text = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let config = tokio_postgres::Config::from_str(&client_text)
            .map_err(|e| format!("{ACCEPTED} ({e})"))?;
        if config.get_hosts().is_empty() {
            return Err(format!("{ACCEPTED} (no host)"));
        }
        Ok(DatabaseUrl {
            config,
            tls,
            root_cert,
            text: text.to_owned(),
        })
    }
}

fn tls_mode(mode: &str) -> Result<TlsMode, String> {
    match mode {
        "disable" => Ok(TlsMode::Disable),
        "prefer" => Ok(TlsMode::Prefer),
        "require" => Ok(TlsMode::Require),
        "verify-full" => Ok(TlsMode::VerifyFull),
        other => Err(format!(
            "sslmode disable, prefer, require or verify-full (not {other:?}; verify-ca is not supported: use verify-full)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tls_mode_and_hides_the_password() {
        let url: DatabaseUrl =
            "postgres://app:s3cret@db:5432/market?sslmode=verify-full&application_name=x"
                .parse()
                .unwrap();
        assert_eq!(url.tls, TlsMode::VerifyFull);
        assert_eq!(url.user(), Some("app"));
        assert_eq!(
            url.redacted(),
            "postgres://app:(hidden)@db:5432/market?sslmode=verify-full&application_name=x"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            "postgres://db/market".parse::<DatabaseUrl>().unwrap().tls,
            TlsMode::Prefer
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "mysql://db/x",
            "postgres://db/x?sslmode=verify-ca",
            "postgres://db/x?sslmode=sometimes",
            "postgres://db:notaport/x",
            "",
        ] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad}");
        }
        let reason = "postgres://db/x?sslmode=verify-ca"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(reason.contains("use verify-full"), "{reason}");
    }
}
