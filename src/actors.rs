//! The actors of a node. Each owns its state; others read it through calls.

pub mod cluster_actor;
pub mod container_actor;
pub mod cron_actor;
pub mod deployment_actor;
pub mod executor_actor;
pub mod job_actor;
pub mod overlay_actor;
pub mod probe_actor;
pub mod supervisor_actor;
