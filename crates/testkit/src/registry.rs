//! A Confluent-compatible Schema Registry stand-in on a loopback port.
//!
//! Implements the REST subset a client needs: register (`POST /subjects/{s}/versions`), look up
//! (`POST /subjects/{s}`), fetch by id, list subjects and versions, get a version or `latest`,
//! read and set the compatibility level (global and per subject), and test compatibility. The
//! BACKWARD check is real (apache-avro's schema resolution rules). Errors use Confluent's JSON
//! body (`error_code`, `message`) and content type. Every connection is served one request and
//! closed, which every HTTP client handles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const MAX_REQUEST: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    /// Schemas by id (canonical text: identity and compatibility).
    schemas: Vec<String>,
    /// Schemas by id as registered (docs and logical types kept), which is what Confluent's
    /// registry serves back.
    registered: Vec<String>,
    /// Per subject, the schema ids of its versions in order.
    subjects: HashMap<String, Vec<u32>>,
    global_level: String,
    subject_levels: HashMap<String, String>,
    /// Required `Authorization` header value, if basic auth is on.
    authorization: Option<String>,
}

/// The stand-in. Dropping it stops the server.
pub struct SchemaRegistryStub {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SchemaRegistryStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryStub")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SchemaRegistryStub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl SchemaRegistryStub {
    /// Starts the stub on a free loopback port (compatibility BACKWARD, no auth).
    ///
    /// # Errors
    /// If no loopback port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            global_level: "BACKWARD".into(),
            ..State::default()
        }));
        let requests = Arc::new(AtomicU64::new(0));
        let (s, r) = (Arc::clone(&state), Arc::clone(&requests));
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, requests) = (Arc::clone(&s), Arc::clone(&r));
                tokio::spawn(async move {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let _ = serve(stream, &state).await;
                });
            }
        });
        Ok(SchemaRegistryStub {
            state,
            addr,
            requests,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// HTTP requests served so far (to check that clients cache).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requires HTTP basic auth with these credentials.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        let token = base64(format!("{user}:{password}").as_bytes());
        lock(&self.state).authorization = Some(format!("Basic {token}"));
    }

    /// The schema ids of `subject`'s versions, oldest first (empty for an unknown subject).
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        lock(&self.state)
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default()
    }

    /// Registers `schema` under `subject` directly (as another producer would).
    ///
    /// # Errors
    /// The registry's error body if it refuses.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, Value> {
        let (status, body) = register(&mut lock(&self.state), subject, &json!({"schema": schema}));
        if status == 200 {
            Ok(u32::try_from(body["id"].as_u64().unwrap_or(0)).unwrap_or(0))
        } else {
            Err(body)
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, content_length) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            break (end + 4, length);
        }
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, 413, &error(413, "request too large")).await;
        }
    };
    while buf.len() < head_end + content_length.min(MAX_REQUEST) {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let body = &buf[head_end..];
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let authorization = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    let (status, reply) = {
        let mut state = lock(state);
        if state.authorization.is_some() && state.authorization != authorization {
            (401, error(401, "Unauthorized"))
        } else {
            let body: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body).unwrap_or(Value::Null)
            };
            route(&mut state, &method, &path, &body)
        }
    };
    respond(&mut stream, status, &reply).await
}

async fn respond(stream: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn error(code: u32, message: &str) -> Value {
    json!({"error_code": code, "message": message})
}

fn route(state: &mut State, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["subjects"]) => {
            let mut subjects: Vec<&String> = state.subjects.keys().collect();
            subjects.sort();
            (200, json!(subjects))
        }
        ("POST", ["subjects", subject, "versions"]) => register(state, subject, body),
        ("POST", ["subjects", subject]) => lookup(state, subject, body),
        ("GET", ["subjects", subject, "versions"]) => match state.subjects.get(*subject) {
            Some(ids) => (200, json!((1..=ids.len()).collect::<Vec<_>>())),
            None => (
                404,
                error(40401, &format!("Subject '{subject}' not found.")),
            ),
        },
        ("GET", ["subjects", subject, "versions", version]) => {
            match version_of(state, subject, version) {
                Ok((v, id)) => (
                    200,
                    json!({"subject": subject, "version": v, "id": id, "schema": state.registered[id as usize - 1]}),
                ),
                Err(reply) => reply,
            }
        }
        ("GET", ["schemas", "ids", id]) => match id
            .parse::<usize>()
            .ok()
            .and_then(|i| state.registered.get(i.wrapping_sub(1)))
        {
            Some(schema) => (200, json!({"schema": schema})),
            None => (404, error(40403, &format!("Schema {id} not found"))),
        },
        ("GET", ["config"]) => (200, json!({"compatibilityLevel": state.global_level})),
        ("PUT", ["config"]) => set_level(body, |level| state.global_level = level),
        ("GET", ["config", subject]) => match state.subject_levels.get(*subject) {
            Some(level) => (200, json!({"compatibilityLevel": level})),
            None => (
                404,
                error(
                    40408,
                    &format!(
                        "Subject '{subject}' does not have subject-level compatibility configured"
                    ),
                ),
            ),
        },
        ("PUT", ["config", subject]) => {
            let subject = (*subject).to_owned();
            set_level(body, |level| {
                state.subject_levels.insert(subject.clone(), level);
            })
        }
        ("POST", ["compatibility", "subjects", subject, "versions", version]) => {
            let candidate = match parse(body) {
                Ok(candidate) => candidate,
                Err(reply) => return reply,
            };
            match version_of(state, subject, version) {
                Ok((_, id)) => {
                    let compatible =
                        backward_compatible(&state.registered[id as usize - 1], &candidate);
                    (200, json!({"is_compatible": compatible.is_ok()}))
                }
                Err(reply) => reply,
            }
        }
        _ => (
            404,
            error(404, &format!("HTTP 404 Not Found: {method} {path}")),
        ),
    }
}

fn set_level(body: &Value, mut apply: impl FnMut(String)) -> (u16, Value) {
    const LEVELS: [&str; 7] = [
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    ];
    match body.get("compatibility").and_then(Value::as_str) {
        Some(level) if LEVELS.contains(&level) => {
            apply(level.to_owned());
            (200, json!({"compatibility": level}))
        }
        _ => (422, error(42203, "Invalid compatibility level")),
    }
}

fn parse(body: &Value) -> Result<Schema, (u16, Value)> {
    let text = body
        .get("schema")
        .and_then(Value::as_str)
        .ok_or((422, error(42201, "Missing schema")))?;
    Schema::parse_str(text).map_err(|e| (422, error(42201, &format!("Invalid schema: {e}"))))
}

/// The submitted schema text with insignificant whitespace removed.
fn as_registered(body: &Value) -> String {
    let text = body
        .get("schema")
        .and_then(Value::as_str)
        .unwrap_or_default();
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_owned(), |v| v.to_string())
}

fn canonical(schema: &Schema) -> String {
    schema.canonical_form()
}

fn version_of(state: &State, subject: &str, version: &str) -> Result<(usize, u32), (u16, Value)> {
    let ids = state.subjects.get(subject).ok_or((
        404,
        error(40401, &format!("Subject '{subject}' not found.")),
    ))?;
    let index = if version == "latest" {
        ids.len()
    } else {
        version.parse().unwrap_or(0)
    };
    match ids.get(index.wrapping_sub(1)) {
        Some(&id) => Ok((index, id)),
        None => Err((404, error(40402, &format!("Version {version} not found.")))),
    }
}

/// BACKWARD: a reader on the new schema can read data written with the old one. Both are taken
/// as registered: the canonical form drops field defaults, and a default is what makes an added
/// field compatible.
fn backward_compatible(old: &str, new: &Schema) -> Result<(), String> {
    let old = Schema::parse_str(old).map_err(|e| e.to_string())?;
    SchemaCompatibility::can_read(&old, new)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn register(state: &mut State, subject: &str, body: &Value) -> (u16, Value) {
    let schema = match parse(body) {
        Ok(schema) => schema,
        Err(reply) => return reply,
    };
    // Identity is the schema as written (Confluent compares the schema string, so a changed
    // default or doc is a new version), not the canonical form, which drops both.
    let text = canonical(&schema);
    let written = as_registered(body);
    let versions = state.subjects.get(subject).cloned().unwrap_or_default();
    if let Some(&id) = versions
        .iter()
        .find(|&&id| state.registered[id as usize - 1] == written)
    {
        return (200, json!({"id": id}));
    }
    let level = state
        .subject_levels
        .get(subject)
        .unwrap_or(&state.global_level)
        .clone();
    // BACKWARD checks the latest version, BACKWARD_TRANSITIVE every one.
    let checked = match level.as_str() {
        "BACKWARD" => versions.len().saturating_sub(1)..versions.len(),
        "BACKWARD_TRANSITIVE" => 0..versions.len(),
        _ => 0..0,
    };
    for index in checked {
        let old = &state.registered[versions[index] as usize - 1];
        if let Err(reason) = backward_compatible(old, &schema) {
            return (
                409,
                error(
                    409,
                    &format!(
                        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", \
                         details: [reader cannot read data written with version {}: {reason}]",
                        index + 1
                    ),
                ),
            );
        }
    }
    let id = match state.registered.iter().position(|s| *s == written) {
        Some(i) => u32::try_from(i + 1).unwrap_or(u32::MAX),
        None => {
            state.schemas.push(text);
            state.registered.push(written);
            u32::try_from(state.schemas.len()).unwrap_or(u32::MAX)
        }
    };
    state
        .subjects
        .entry(subject.to_owned())
        .or_default()
        .push(id);
    (200, json!({"id": id}))
}

fn lookup(state: &State, subject: &str, body: &Value) -> (u16, Value) {
    let schema = match parse(body) {
        Ok(schema) => schema,
        Err(reply) => return reply,
    };
    let text = canonical(&schema);
    let Some(ids) = state.subjects.get(subject) else {
        return (
            404,
            error(40401, &format!("Subject '{subject}' not found.")),
        );
    };
    match ids
        .iter()
        .position(|&id| state.schemas[id as usize - 1] == text)
    {
        Some(i) => (
            200,
            json!({"subject": subject, "id": ids[i], "version": i + 1, "schema": text}),
        ),
        None => (404, error(40403, "Schema not found")),
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    fn record(fields: &str) -> String {
        format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#)
    }

    fn register_in(state: &mut State, schema: &str) -> Result<u64, String> {
        match register(state, "t-value", &json!({ "schema": schema })) {
            (200, body) => Ok(body["id"].as_u64().unwrap_or(0)),
            (_, body) => Err(body["message"].as_str().unwrap_or("").to_owned()),
        }
    }

    #[test]
    fn a_changed_default_is_a_new_version_and_an_added_field_needs_one() {
        let mut state = State {
            global_level: "BACKWARD".into(),
            ..State::default()
        };
        let v1 = record(r#"{"name":"a","type":"long"}"#);
        let v2 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"long","default":0}"#);
        let v3 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"long","default":7}"#);
        let no_default = record(r#"{"name":"a","type":"long"},{"name":"c","type":"long"}"#);
        let ids: Vec<u64> = [&v1, &v2, &v3, &v2]
            .iter()
            .map(|s| register_in(&mut state, s).unwrap())
            .collect();
        assert_eq!(
            ids,
            [1, 2, 3, 2],
            "v3 differs from v2 only in a default: its own version"
        );
        let refused = register_in(&mut state, &no_default).unwrap_err();
        assert!(
            refused.contains("incompatible") && refused.contains("version 3"),
            "{refused}"
        );
    }

    #[test]
    fn backward_transitive_checks_every_version_backward_only_the_latest() {
        for (level, accepted) in [("BACKWARD", true), ("BACKWARD_TRANSITIVE", false)] {
            let mut state = State {
                global_level: level.into(),
                ..State::default()
            };
            // v2 drops `a`, v3 brings it back without a default: readable after v2, not after v1.
            register_in(&mut state, &record(r#"{"name":"a","type":"long"}"#)).unwrap();
            register_in(
                &mut state,
                &record(r#"{"name":"b","type":"long","default":0}"#),
            )
            .unwrap();
            let v3 = record(
                r#"{"name":"b","type":"long","default":0},{"name":"a","type":"string","default":"x"}"#,
            );
            assert_eq!(register_in(&mut state, &v3).is_ok(), accepted, "{level}");
        }
    }
}
