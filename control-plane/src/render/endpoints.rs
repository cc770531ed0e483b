//! Endpoints and connections: where a rendered component's endpoints can be reached, and how a
//! resolved connection's address reaches the consuming container.
//!
//! An endpoint's in-cluster address comes from the rendered manifests, never from templates'
//! intentions: the Service that exposes the endpoint's port names the host. A consumer's
//! connection resolves to that address (see `releases::connections`).

use serde_json::{Value, json};
use troupe_common::pb::v1alpha1 as pb;

/// A network address in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `http`, `ws`, `grpc`, `tcp` or `udp`.
    pub scheme: String,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: i32,
    /// Path prefix, e.g. `/api`; empty for none.
    pub path: String,
}

impl Address {
    /// `scheme://host:port/path` for URL schemes, `host:port` for gRPC, TCP and UDP.
    pub fn url(&self) -> String {
        match self.scheme.as_str() {
            "http" | "https" | "ws" | "wss" => {
                format!("{}://{}:{}{}", self.scheme, self.host, self.port, self.path)
            }
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The address an endpoint status gives for in-cluster callers.
    pub fn from_url(url: &pb::EndpointUrl) -> Self {
        Address {
            scheme: url.scheme.clone(),
            host: url.host.clone(),
            port: url.port,
            path: url.path.clone(),
        }
    }

    fn to_url(&self) -> pb::EndpointUrl {
        pb::EndpointUrl {
            scheme: self.scheme.clone(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
        }
    }
}

/// The URL scheme of an endpoint type.
fn scheme(endpoint_type: &str) -> &'static str {
    match endpoint_type {
        "gRPC" => "grpc",
        "Websocket" => "ws",
        "TCP" => "tcp",
        "UDP" => "udp",
        _ => "http",
    }
}

/// For each workload endpoint that a rendered Service exposes (a port whose `port` or
/// `targetPort` is the endpoint's), where in-cluster callers reach it. `namespace` is the
/// target namespace, used for a Service rendered without one. Endpoints no Service exposes
/// are left out: nothing can call them.
pub fn endpoint_statuses(
    endpoints: &[pb::Endpoint],
    objects: &[Value],
    namespace: &str,
) -> Vec<pb::EndpointStatus> {
    let services: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Service" && o["apiVersion"] == "v1")
        .collect();
    endpoints
        .iter()
        .filter_map(|endpoint| {
            let target = if endpoint.target_port == 0 {
                endpoint.port
            } else {
                endpoint.target_port
            };
            let (service, port) = services.iter().find_map(|s| {
                let ports = s.pointer("/spec/ports")?.as_array()?;
                let port = ports.iter().find(|p| {
                    p["port"] == json!(endpoint.port) || p["targetPort"] == json!(target)
                })?;
                Some((*s, port["port"].as_i64()? as i32))
            })?;
            let name = service.pointer("/metadata/name")?.as_str()?;
            let ns = service
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace);
            let address = Address {
                scheme: scheme(&endpoint.r#type).to_string(),
                host: format!("{name}.{ns}.svc.cluster.local"),
                port,
                path: endpoint.base_path.trim_end_matches('/').to_string(),
            };
            Some(pb::EndpointStatus {
                name: endpoint.name.clone(),
                r#type: endpoint.r#type.clone(),
                service_url: Some(address.to_url()),
                invoke_url: address.url(),
                internal_urls: None,
                external_urls: None,
            })
        })
        .collect()
}

/// The environment variables a resolved connection asks for (`envBindings`), in the order
/// address, host, port, base path; unnamed parts are not injected.
pub fn connection_env(connection: &pb::Connection, address: &Address) -> Vec<(String, String)> {
    let names = connection.env_bindings.clone().unwrap_or_default();
    [
        (names.address, address.url()),
        (names.host, address.host.clone()),
        (names.port, address.port.to_string()),
        (names.base_path, address.path.clone()),
    ]
    .into_iter()
    .filter(|(name, _)| !name.is_empty())
    .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use troupe_common::pb::v1alpha1 as pb;

    use super::*;

    fn endpoint(name: &str, ty: &str, port: i32, base_path: &str) -> pb::Endpoint {
        pb::Endpoint {
            name: name.into(),
            r#type: ty.into(),
            port,
            base_path: base_path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_are_addressed_through_the_service_exposing_their_port() {
        let objects = [
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}}),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "api", "namespace": "acme-shop-dev"},
                   "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                      {"name": "rpc", "port": 9090, "targetPort": 9090}]}}),
        ];
        let endpoints = [
            endpoint("http", "HTTP", 8080, "/v1/"),
            endpoint("rpc", "gRPC", 9090, ""),
            endpoint("admin", "HTTP", 7000, ""),
        ];
        let statuses = endpoint_statuses(&endpoints, &objects, "ignored");
        let urls: Vec<(&str, &str)> = statuses
            .iter()
            .map(|s| (s.name.as_str(), s.invoke_url.as_str()))
            .collect();
        assert_eq!(
            urls,
            [
                ("http", "http://api.acme-shop-dev.svc.cluster.local:80/v1"),
                ("rpc", "api.acme-shop-dev.svc.cluster.local:9090"),
            ],
            "admin has no Service port, so it has no address"
        );
    }

    #[test]
    fn a_service_without_a_namespace_is_in_the_target_namespace() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                              "spec": {"ports": [{"port": 5432}]}}),
        ];
        let statuses = endpoint_statuses(&[endpoint("pg", "TCP", 5432, "")], &objects, "t");
        assert_eq!(statuses[0].invoke_url, "db.t.svc.cluster.local:5432");
    }

    #[test]
    fn connections_inject_only_the_named_parts() {
        let connection = pb::Connection {
            component: "api".into(),
            endpoint: "http".into(),
            env_bindings: Some(pb::ConnectionEnvBindings {
                address: "API_URL".into(),
                port: "API_PORT".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let address = Address {
            scheme: "http".into(),
            host: "api.t.svc.cluster.local".into(),
            port: 80,
            path: "/v1".into(),
        };
        assert_eq!(
            connection_env(&connection, &address),
            [
                (
                    "API_URL".to_string(),
                    "http://api.t.svc.cluster.local:80/v1".to_string()
                ),
                ("API_PORT".to_string(), "80".to_string()),
            ]
        );
    }
}
