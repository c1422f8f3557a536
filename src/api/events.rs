//! `GET /v1/events`: supervisor and job events as Server-Sent Events.
//!
//! Each event is one SSE message: `event:` is [`Event::kind`]
//! (`child_restarted`, `execution_finished`, ...), `data:` the event as
//! JSON (the same object, with its `event` field). A comment is sent every
//! 15 s while nothing happens, so proxies keep the connection. The stream
//! starts with the events published after the request arrived;
//! `?kind=a,b` keeps only those kinds. It ends when the client leaves or
//! the server stops.
//!
//! `GET /v1/events/recent[?limit=N&kind=a,b]`: the last events (at most
//! [`RECENT`], `limit` defaults to 100), oldest first, each the event's
//! object with `at` (when the API saw it) added: what happened before a
//! client began to follow (the web view starts with it). Kept by the node
//! from its start (see [`crate::Node::recent_events`]).

use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::State,
    response::sse::{self, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::{AppState, error::ApiError, extract::QueryParams};
use crate::events::{Event, RECENT, RecentEvent};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecentQuery {
    kind: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/events/recent`.
pub(crate) async fn recent(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<RecentQuery>,
) -> Result<Json<Vec<RecentEvent>>, ApiError> {
    let kinds = parse_kinds(q.kind)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > RECENT {
        return Err(ApiError::bad_request(format!(
            "invalid query parameter limit: {limit}: must be between 1 and {RECENT}"
        )));
    }
    let mut events: Vec<RecentEvent> = state
        .node
        .recent_events()
        .await
        .into_iter()
        .filter(|e| {
            kinds
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k == e.event.kind()))
        })
        .collect();
    let skip = events.len().saturating_sub(limit);
    events.drain(..skip);
    Ok(Json(events))
}

/// `?kind=a,b`, each checked.
fn parse_kinds(kind: Option<String>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = kind else {
        return Ok(None);
    };
    let kinds: Vec<String> = list
        .split(',')
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    if let Some(bad) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "invalid query parameter kind: unknown event kind {bad:?}, expected one of {}",
            KINDS.join(", ")
        )));
    }
    Ok(Some(kinds))
}

/// Every kind of event, to check `?kind=`.
const KINDS: &[&str] = Event::KINDS;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    kind: Option<String>,
}

pub(crate) async fn stream(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let kinds = parse_kinds(q.kind)?;
    let events = state.node.events();
    let stop = super::stopped(state.stopping.clone());
    let stream = events
        .filter(move |e| {
            let keep = kinds
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k == e.kind()));
            std::future::ready(keep)
        })
        .map(|e: Event| Ok(message(&e)))
        .take_until(Box::pin(stop));
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

fn message(e: &Event) -> sse::Event {
    let event = sse::Event::default().event(e.kind());
    match serde_json::to_string(e) {
        Ok(json) => event.data(json),
        Err(err) => event.comment(format!("failed to serialize the event: {err}")),
    }
}
