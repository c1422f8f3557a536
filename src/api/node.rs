//! `GET /v1/health` and `GET /v1/tree`.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{AppState, error::ApiError, extract::QueryParams};

/// The node's [`Health`](crate::Health): 200 when every part answers, 503
/// while shutting down or when a part does not answer.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let health = state.node.health().await;
    let status = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

/// This node's view of its cluster ([`ClusterView`](crate::cluster::ClusterView)):
/// members with their state, round trip and missed heartbeats, and the
/// `--join` addresses; 404 when the node is not in a cluster.
pub(crate) async fn cluster(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.node.cluster() {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::not_found(
            "this node is not in a cluster (start the agent with --cluster-listen and --cluster-cookie-file)",
        )),
    }
}

/// `POST /v1/cluster/members/{name}/forget`: forgets a member that is down
/// for good (404 unknown, 409 not down, 404 outside a cluster).
pub(crate) async fn cluster_forget(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    match state.node.cluster_forget(&name).await? {
        None => Err(ApiError::not_found(
            "this node is not in a cluster (start the agent with --cluster-listen and --cluster-cookie-file)",
        )),
        Some(Ok(())) => Ok(Json(serde_json::json!({ "forgotten": name })).into_response()),
        Some(Err(e @ crate::cluster::ForgetError::Unknown(_))) => {
            Err(ApiError::not_found(e.to_string()))
        }
        Some(Err(e)) => Err(ApiError::new(
            super::error::ErrorCode::Conflict,
            e.to_string(),
        )),
    }
}

/// Every member's tree (`?format=text`: drawn), this node first; 404
/// outside a cluster.
pub(crate) async fn cluster_tree(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<TreeQuery>,
) -> Result<Response, ApiError> {
    let Some(trees) = state.node.cluster_trees().await else {
        return Err(ApiError::not_found(
            "this node is not in a cluster (start the agent with --cluster-listen and --cluster-cookie-file)",
        ));
    };
    let trees = trees?;
    Ok(match q.format {
        TreeFormat::Json => Json(serde_json::json!({ "nodes": trees })).into_response(),
        TreeFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            crate::cluster::draw_trees(&trees),
        )
            .into_response(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TreeQuery {
    #[serde(default)]
    format: TreeFormat,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TreeFormat {
    #[default]
    Json,
    Text,
}

/// The whole tree as [`TreeNode`](crate::TreeNode) JSON, or drawn like
/// `pstree` with `?format=text`.
pub(crate) async fn tree(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<TreeQuery>,
) -> Result<Response, ApiError> {
    let tree = state.node.tree().await?;
    Ok(match q.format {
        TreeFormat::Json => Json(tree).into_response(),
        TreeFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{tree}\n"),
        )
            .into_response(),
    })
}
