//! `GET /v1/deployment` (the spec applied last, as JSON) and
//! `PUT /v1/deployment` (a whole spec, YAML or JSON: validated with every
//! error listed, then diffed and applied as a reload is; a spec with
//! errors changes nothing). A later SIGHUP re-reads the agent's `--spec`
//! file, which then wins.

use axum::{Json, body::Bytes, extract::State};

use super::{AppState, error::ApiError};
use crate::{
    node::DeployReport,
    spec::{Deployment, MAX_SPEC_FILE},
};

/// The deployment applied last, with the values of masked variables
/// (`mask` of each service and job) shown as `***`.
pub(crate) async fn get(State(state): State<AppState>) -> Json<Deployment> {
    let mut d = state.node.deployment().await;
    for s in d.services.values_mut() {
        s.env = crate::store::mask_env(&s.env, &s.mask);
    }
    for j in d.jobs.values_mut() {
        j.env = crate::store::mask_env(&j.env, &j.mask);
    }
    Json(d)
}

/// Applies a whole spec; answers what changed.
pub(crate) async fn put(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<DeployReport>, ApiError> {
    if body.len() as u64 > MAX_SPEC_FILE {
        return Err(ApiError::bad_request(format!(
            "the spec is {} bytes; at most {MAX_SPEC_FILE} are accepted",
            body.len()
        )));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the spec is not UTF-8 text: {e}")))?;
    // YAML is a superset of JSON: one parser reads both.
    let deployment = Deployment::from_yaml(text).map_err(|e| ApiError::invalid_spec(&e))?;
    Ok(Json(state.node.deploy(&deployment).await?))
}
