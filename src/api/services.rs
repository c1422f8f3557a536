//! `GET /v1/services`, `GET /v1/services/{name}`,
//! `POST /v1/services/{name}/restart`: [`ServiceInfo`] as JSON.

use axum::{Json, extract::State};

use super::{AppState, error::ApiError, extract::PathValue};
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

async fn find(state: &AppState, name: &str) -> Result<ServiceInfo, ApiError> {
    state
        .node
        .service(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no service named {name:?}")))
}
