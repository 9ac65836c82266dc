//! The answer to each JSON-RPC request, as Deribit documents it: the frames to send back and
//! whether a heartbeat starts. Scripted failures and the credential check happen here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::frames::{error_frame, result_frame, server_us};
use super::history::{by_currency_and_time, by_instrument, by_instrument_and_time};
use super::market::instruments;
use super::{CallFault, State};

/// What the connection does with one request.
#[derive(Default)]
pub(super) struct Reply {
    /// Frames to send, in order.
    pub(super) frames: Vec<String>,
    /// After `set_heartbeat`: the pace of `test_request`s.
    pub(super) heartbeat: Option<Duration>,
    /// Close the connection after the frames (a scripted [`CallFault`]).
    pub(super) close: bool,
}

impl Reply {
    fn frames(frames: Vec<String>) -> Self {
        Reply {
            frames,
            ..Reply::default()
        }
    }
}

/// Answers one request: the frames to send, the test pace after `set_heartbeat`, and whether
/// a scripted fault closes the connection.
pub(super) fn handle(state: &Arc<Mutex<State>>, connection: u64, text: &str) -> Reply {
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if s.connections.get(&connection).is_some_and(|c| c.silent) {
        return Reply::default();
    }
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return Reply::frames(vec![error_frame(&Value::Null, -32700, "parse_error")]);
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let params = request.get("params").cloned().unwrap_or(json!({}));
    s.methods.push(method.clone());
    let calls = {
        let calls = s.calls.entry(method.clone()).or_default();
        *calls += 1;
        *calls
    };
    if let Some(at) = s
        .call_faults
        .iter()
        .position(|(m, nth, _)| *m == method && *nth == calls)
    {
        let (_, _, fault) = s.call_faults.remove(at);
        return match fault {
            CallFault::Error { code, message } => {
                Reply::frames(vec![error_frame(&id, code, &message)])
            }
            CallFault::ErrorThenClose { code, message } => Reply {
                frames: vec![error_frame(&id, code, &message)],
                close: true,
                ..Reply::default()
            },
            CallFault::Close => Reply {
                close: true,
                ..Reply::default()
            },
        };
    }
    if let Some((code, message)) = s.failures.get_mut(&method).and_then(VecDeque::pop_front) {
        return Reply::frames(vec![error_frame(&id, code, &message)]);
    }
    let mut heartbeat = None;
    let result = match method.as_str() {
        "public/hello" => json!({"version": "1.2.26"}),
        "public/test" => {
            if let Some(sent) = s.unanswered_tests.remove(&connection) {
                s.test_replies.push(sent.elapsed());
            }
            json!({"version": "1.2.26"})
        }
        "public/get_time" => json!(server_us(s.clock_offset_ms) / 1000),
        "public/set_heartbeat" => {
            let asked = params.get("interval").and_then(Value::as_u64).unwrap_or(0);
            if asked < 10 {
                return Reply::frames(vec![error_frame(&id, 11050, "bad_request")]);
            }
            heartbeat = Some(s.test_request_every.unwrap_or(Duration::from_secs(asked)));
            json!("ok")
        }
        "public/auth" => match auth(&mut s, connection, &params) {
            Ok(result) => result,
            Err((code, message)) => return Reply::frames(vec![error_frame(&id, code, message)]),
        },
        "public/subscribe" => {
            let channels: Vec<String> = params
                .get("channels")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let authed = s.connections.get(&connection).is_some_and(|c| c.authed);
            if !authed && channels.iter().any(|c| c.ends_with(".raw")) {
                return Reply::frames(vec![error_frame(
                    &id,
                    13778,
                    "raw_subscriptions_not_available_for_unauthorized",
                )]);
            }
            s.subscribe_calls.push((connection, channels.clone()));
            let unconfirmed = s.unconfirmed.clone();
            let channels: Vec<String> = channels
                .into_iter()
                .filter(|c| !unconfirmed.contains(c))
                .collect();
            if let Some(c) = s.connections.get_mut(&connection) {
                c.subscriptions.extend(channels.iter().cloned());
            }
            json!(channels)
        }
        "public/get_last_trades_by_instrument"
        | "public/get_last_trades_by_currency_and_time"
        | "public/get_last_trades_by_instrument_and_time" => {
            let answer = match method.as_str() {
                "public/get_last_trades_by_instrument" => by_instrument(&s, &params),
                "public/get_last_trades_by_currency_and_time" => by_currency_and_time(&s, &params),
                _ => by_instrument_and_time(&s, &params),
            };
            match answer {
                Ok(result) => result,
                Err((code, message)) => {
                    return Reply::frames(vec![error_frame(&id, code, message)]);
                }
            }
        }
        "public/get_instruments" => instruments(&s, &params),
        _ => return Reply::frames(vec![error_frame(&id, -32601, "Method not found")]),
    };
    Reply {
        frames: vec![result_frame(&id, &result, &s)],
        heartbeat,
        close: false,
    }
}

/// `public/auth`: a `client_credentials` grant (checked if credentials are required) or a
/// refresh; either authorises the connection for `raw` channels.
fn auth(s: &mut State, connection: u64, params: &Value) -> Result<Value, (i64, &'static str)> {
    let grant = params
        .get("grant_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match grant {
        "client_credentials" => {
            let given = (
                params
                    .get("client_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                params
                    .get("client_secret")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            let ok = s
                .credentials
                .as_ref()
                .is_none_or(|(id, secret)| given == (id.as_str(), secret.as_str()));
            if !ok {
                return Err((13004, "invalid_credentials"));
            }
            s.auths += 1;
        }
        "refresh_token" => s.refreshes += 1,
        _ => return Err((11050, "bad_request")),
    }
    if let Some(c) = s.connections.get_mut(&connection) {
        c.authed = true;
    }
    Ok(json!({
        "access_token": format!("access-{}", s.auths + s.refreshes),
        "expires_in": 2,
        "refresh_token": format!("refresh-{}", s.auths + s.refreshes),
        "scope": "connection mainaccount",
        "token_type": "bearer",
        "enabled_features": [],
    }))
}
