//! A DataPlane's (or ClusterDataPlane's) status from its agent sessions: the connection, what
//! the agent said of its cluster, how many Releases are in sync, and `Ready` (`AgentConnected`,
//! `AgentDisconnected`, `NoAgent`).

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::{ConditionType, Reason};

use super::set_condition;

/// The connection state of one data plane, as its sessions see it.
#[derive(Debug, Default, Clone)]
pub struct PlaneReport {
    /// Sessions open (0 or 1: a newer one displaces the older).
    pub sessions: i32,
    /// Version of the agent last connected.
    pub agent_version: String,
    /// What the agent said of its cluster.
    pub cluster_info: Option<pb::ClusterInfo>,
    /// When the agent last connected.
    pub last_connected: Option<pbjson_types::Timestamp>,
    /// When the agent last disconnected.
    pub last_disconnected: Option<pbjson_types::Timestamp>,
    /// When the agent was last heard from.
    pub last_heartbeat: Option<pbjson_types::Timestamp>,
    /// Releases in sync and pending.
    pub in_sync: i32,
    /// Releases waiting to be applied or pruned.
    pub pending: i32,
    /// Releases whose current generation the agent failed to apply (counted in `pending`
    /// too); for metrics, not part of the status.
    pub failed: i32,
    /// Why the last session ended, if it did.
    pub message: String,
    /// The server holding the session (or that held it, once it ended).
    pub server: String,
}

/// Folds `report` into a data plane's status; times not in the report keep their value.
pub fn plane_status(status: &mut pb::DataPlaneStatus, report: &PlaneReport) {
    let connection = status.agent_connection.get_or_insert_default();
    if report.sessions == 0 && connection.connected && connection.server != report.server {
        // The agent moved to another server, which reported it first: the end of the old
        // session says nothing of the new one.
        return;
    }
    connection.server = report.server.clone();
    connection.connected = report.sessions > 0;
    connection.connected_agents = report.sessions;
    if !report.agent_version.is_empty() {
        connection.agent_version = report.agent_version.clone();
    }
    connection.last_connected_time = report.last_connected.or(connection.last_connected_time);
    connection.last_disconnected_time = report
        .last_disconnected
        .or(connection.last_disconnected_time);
    connection.last_heartbeat_time = report.last_heartbeat.or(connection.last_heartbeat_time);
    connection.message = report.message.clone();
    if let Some(info) = &report.cluster_info {
        status.cluster_info = Some(info.clone());
    }
    status.releases_in_sync = report.in_sync;
    status.releases_pending = report.pending;
    let (ready, reason, message) = if report.sessions > 0 {
        (
            true,
            Reason::AgentConnected,
            format!("agent {} connected", connection.agent_version),
        )
    } else if connection.last_connected_time.is_some() {
        (false, Reason::AgentDisconnected, report.message.clone())
    } else {
        (
            false,
            Reason::NoAgent,
            "no agent has connected yet".to_string(),
        )
    };
    let generation = status.observed_generation;
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        ready,
        reason,
        &message,
        generation,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{find_condition, holds};

    fn mk_time(seconds: i64) -> Option<pbjson_types::Timestamp> {
        Some(pbjson_types::Timestamp { seconds, nanos: 0 })
    }

    fn ready(status: &pb::DataPlaneStatus) -> (bool, String, String) {
        let c = find_condition(&status.conditions, ConditionType::Ready).unwrap();
        (holds(c), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_plane_no_agent_ever_reached_has_no_agent() {
        let mut status = pb::DataPlaneStatus::default();
        plane_status(&mut status, &PlaneReport::default());
        assert_eq!(
            ready(&status),
            (false, "NoAgent".into(), "no agent has connected yet".into())
        );
    }

    #[test]
    fn a_plane_is_ready_while_its_agent_is_connected_and_keeps_its_history_after() {
        let mut status = pb::DataPlaneStatus {
            observed_generation: 4,
            ..Default::default()
        };
        let connected = PlaneReport {
            sessions: 1,
            agent_version: "0.3.1".into(),
            last_connected: mk_time(100),
            last_heartbeat: mk_time(100),
            in_sync: 2,
            pending: 1,
            ..Default::default()
        };
        plane_status(&mut status, &connected);
        assert_eq!(
            ready(&status),
            (
                true,
                "AgentConnected".into(),
                "agent 0.3.1 connected".into()
            )
        );
        assert_eq!((status.releases_in_sync, status.releases_pending), (2, 1));
        assert_eq!(status.conditions[0].observed_generation, 4);

        let gone = PlaneReport {
            last_disconnected: mk_time(200),
            message: "agent disconnected: the agent closed the stream".into(),
            ..Default::default()
        };
        plane_status(&mut status, &gone);
        assert_eq!(
            ready(&status),
            (
                false,
                Reason::AgentDisconnected.as_str().into(),
                "agent disconnected: the agent closed the stream".into()
            )
        );
        let connection = status.agent_connection.unwrap();
        assert!(!connection.connected);
        assert_eq!(connection.agent_version, "0.3.1");
        assert_eq!(connection.last_connected_time, mk_time(100));
        assert_eq!(connection.last_disconnected_time, mk_time(200));
    }

    #[test]
    fn an_agent_that_moved_to_another_server_stays_connected_when_the_old_session_ends() {
        let mut status = pb::DataPlaneStatus::default();
        let on = |server: &str, at| PlaneReport {
            sessions: 1,
            last_connected: mk_time(at),
            server: server.into(),
            ..Default::default()
        };
        let gone_from = |server: &str| PlaneReport {
            last_disconnected: mk_time(300),
            message: "agent disconnected: the stream broke".into(),
            server: server.into(),
            ..Default::default()
        };
        plane_status(&mut status, &on("a:50051", 100));
        plane_status(&mut status, &on("b:50051", 200));
        plane_status(&mut status, &gone_from("a:50051"));
        let connection = status.agent_connection.clone().unwrap();
        assert!(connection.connected, "b holds the session");
        assert_eq!(connection.server, "b:50051");
        assert!(ready(&status).0);

        plane_status(&mut status, &gone_from("b:50051"));
        let connection = status.agent_connection.clone().unwrap();
        assert!(!connection.connected);
        assert_eq!(connection.server, "b:50051", "who held it last");
    }
}
