//! Schema Registry access: register our schemas once at start, fetch writer schemas by id once.
//!
//! Built on schema_registry_converter's async client. Nothing here runs per message: schema ids
//! and parsed schemas are cached for the life of the process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// HTTP basic credentials for the registry.
#[derive(Clone)]
pub struct BasicAuth {
    /// User (shown in logs).
    pub user: String,
    /// Password (never shown).
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"REDACTED")
            .finish()
    }
}

/// Where the registry is and how patiently to talk to it.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://schema-registry:8081`.
    pub url: String,
    /// Optional basic auth.
    pub basic_auth: Option<BasicAuth>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts for a call that fails in a retryable way (unreachable, 502/503).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub initial_backoff: Duration,
}

impl RegistryConfig {
    /// Defaults: 10 s timeout, 5 attempts, 200 ms first backoff.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryConfig {
            url: url.into(),
            basic_auth: None,
            timeout: Duration::from_secs(10),
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
        }
    }

    /// The variables that set this configuration and the values in use, for `check-config`
    /// (the password hidden).
    pub fn effective_variables(&self) -> Vec<(String, String)> {
        let (user, password) = self.basic_auth.as_ref().map_or_else(
            || {
                (
                    crate::config::NOT_SET.to_owned(),
                    crate::config::NOT_SET.to_owned(),
                )
            },
            |auth| (auth.user.clone(), crate::config::HIDDEN.to_owned()),
        );
        vec![
            ("SCHEMA_REGISTRY_URL".to_owned(), self.url.clone()),
            ("SCHEMA_REGISTRY_USER".to_owned(), user),
            ("SCHEMA_REGISTRY_PASSWORD".to_owned(), password),
        ]
    }

    /// From the services' settings `SCHEMA_REGISTRY_URL` (http or https) and the optional
    /// `SCHEMA_REGISTRY_USER` / `SCHEMA_REGISTRY_PASSWORD` pair.
    ///
    /// # Errors
    /// [`InvalidRegistrySetting`] naming the variable at fault.
    pub fn from_settings(
        url: &str,
        user: Option<String>,
        password: Option<String>,
    ) -> std::result::Result<Self, InvalidRegistrySetting> {
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InvalidRegistrySetting {
                variable: "SCHEMA_REGISTRY_URL",
                value: url.to_owned(),
                accepted: "an http(s):// URL such as http://schema-registry:8081",
            });
        }
        let mut config = RegistryConfig::new(url);
        config.basic_auth = match (user, password) {
            (Some(user), Some(password)) => Some(BasicAuth { user, password }),
            (None, None) => None,
            // Name the one that is missing (the value shown is the user, never the password).
            (Some(_), None) => {
                return Err(InvalidRegistrySetting {
                    variable: "SCHEMA_REGISTRY_PASSWORD",
                    value: String::new(),
                    accepted: "required: SCHEMA_REGISTRY_USER is set",
                });
            }
            (None, Some(_)) => {
                return Err(InvalidRegistrySetting {
                    variable: "SCHEMA_REGISTRY_USER",
                    value: String::new(),
                    accepted: "required: SCHEMA_REGISTRY_PASSWORD is set",
                });
            }
        };
        Ok(config)
    }
}

/// A registry setting the services cannot use (never carries the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRegistrySetting {
    /// The environment variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What would have been accepted.
    pub accepted: &'static str,
}

/// The TopicNameStrategy subject of a topic's values.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// A cached registry client.
pub struct Registry {
    settings: SrSettings,
    config: RegistryConfig,
    registered: Mutex<HashMap<(String, String), u32>>,
    schemas: Mutex<HashMap<u32, Arc<Schema>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for `config`.
    ///
    /// # Errors
    /// [`Error::Registry`] if the HTTP client cannot be built.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let mut builder = SrSettings::new_builder(config.url.clone());
        builder.set_timeout(config.timeout);
        if let Some(auth) = &config.basic_auth {
            builder.set_basic_authorization(&auth.user, Some(&auth.password));
        }
        let settings = builder.build().map_err(|e| Error::Registry {
            subject: String::new(),
            reason: format!(
                "cannot configure the client for {}: {}",
                config.url,
                describe(&e)
            ),
            retryable: false,
        })?;
        Ok(Registry {
            settings,
            config,
            registered: Mutex::default(),
            schemas: Mutex::default(),
        })
    }

    /// Registers `schema_json` under `subject`, or finds it if already there; returns its id.
    ///
    /// # Errors
    /// [`Error::Registry`] naming the subject and the registry's reason: an incompatible schema
    /// (not retryable) or a registry still unreachable after the configured attempts.
    pub async fn register(&self, subject: &str, schema_json: &str) -> Result<u32> {
        let key = (subject.to_owned(), schema_json.to_owned());
        if let Some(&id) = lock(&self.registered).get(&key) {
            return Ok(id);
        }
        let schema = Schema::parse_str(schema_json).map_err(|e| Error::Schema {
            name: "registered",
            reason: e.to_string(),
        })?;
        let registered = self
            .with_retries(subject, || {
                post_schema(
                    &self.settings,
                    subject.to_owned(),
                    SuppliedSchema::new(None, SchemaType::Avro, schema_json.to_owned()),
                )
            })
            .await?;
        info!(subject, id = registered.id, "Schema registered.");
        lock(&self.registered).insert(key, registered.id);
        lock(&self.schemas).insert(registered.id, Arc::new(schema));
        Ok(registered.id)
    }

    /// The writer schema `id` if it was fetched before (no request).
    pub fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        lock(&self.schemas).get(&id).map(Arc::clone)
    }

    /// The writer schema with `id`, fetched once and cached.
    ///
    /// # Errors
    /// [`Error::UnknownSchema`] if the registry does not know the id, [`Error::Registry`] if it
    /// cannot be reached, [`Error::Schema`] if what it returns does not parse.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>> {
        if let Some(schema) = lock(&self.schemas).get(&id) {
            return Ok(Arc::clone(schema));
        }
        let subject = format!("schema id {id}");
        let registered = match self
            .with_retries(&subject, || get_schema_by_id(id, &self.settings))
            .await
        {
            Ok(registered) => registered,
            Err(Error::Registry { reason, .. }) if reason.contains("40403") => {
                return Err(Error::UnknownSchema(id));
            }
            Err(e) => return Err(e),
        };
        let schema =
            Arc::new(
                Schema::parse_str(&registered.schema).map_err(|e| Error::Schema {
                    name: "writer",
                    reason: format!("id {id}: {e}"),
                })?,
            );
        lock(&self.schemas).insert(id, Arc::clone(&schema));
        Ok(schema)
    }

    async fn with_retries<T, F, Fut>(&self, subject: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SRCError>>,
    {
        let mut backoff = self.config.initial_backoff;
        let attempts = self.config.attempts.max(1);
        for attempt in 1..=attempts {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) if e.retriable && attempt < attempts => {
                    warn!(subject, attempt, error = %describe(&e), "Schema registry call failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(e) => {
                    let reason = if e.retriable {
                        format!(
                            "registry at {} unreachable after {attempts} attempts: {}",
                            self.config.url,
                            describe(&e)
                        )
                    } else {
                        describe(&e)
                    };
                    return Err(Error::Registry {
                        subject: subject.to_owned(),
                        reason,
                        retryable: e.retriable,
                    });
                }
            }
        }
        Err(Error::Registry {
            subject: subject.to_owned(),
            reason: "no attempt made".into(),
            retryable: true,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The registry's own words: the error and its cause, without the library's boilerplate.
fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}
