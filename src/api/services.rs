//! `GET /v1/services`, `GET /v1/services/{name}`,
//! `POST /v1/services/{name}/restart|stop|start`,
//! `PUT /v1/services/{name}/replicas` (`{"replicas": N}`): [`ServiceInfo`]
//! as JSON, as the service is once the operation is done.

use axum::{Json, extract::State};

use super::{
    AppState,
    error::ApiError,
    extract::{JsonBody, PathValue},
};
use crate::node::ServiceInfo;

/// Every service, in start order.
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<ServiceInfo>>, ApiError> {
    Ok(Json(state.node.services().await?))
}

/// One service; 404 naming it when there is none.
pub(crate) async fn get(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await.map(Json)
}

/// Restarts every replica (stop in reverse order, start again) and answers
/// the service as it is after.
pub(crate) async fn restart(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.restart_service(&name).await?;
    find(&state, &name).await.map(Json)
}

/// Stops the service (each replica with its grace); it stays stopped,
/// across reloads too, until started.
pub(crate) async fn stop(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.stop_service_kept(&name).await?;
    find(&state, &name).await.map(Json)
}

/// Starts a stopped service (a running one is left as it is).
pub(crate) async fn start(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.start_stopped_service(&name).await?;
    find(&state, &name).await.map(Json)
}

/// The body of `PUT /v1/services/{name}/replicas`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Replicas {
    replicas: usize,
}

/// Sets the replicas in place (new ones start, extra ones stop from the
/// last; the others are not touched).
pub(crate) async fn scale(
    State(state): State<AppState>,
    PathValue(name): PathValue,
    JsonBody(body): JsonBody<Replicas>,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.scale_service(&name, body.replicas).await?;
    find(&state, &name).await.map(Json)
}

async fn find(state: &AppState, name: &str) -> Result<ServiceInfo, ApiError> {
    state
        .node
        .service(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no service named {name:?}")))
}
