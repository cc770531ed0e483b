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
/// `targetPort` is the endpoint's), where in-cluster callers reach it, and — when a rendered
/// HTTPRoute on one of the data plane's gateways sends traffic to that Service port — its
/// URLs on the external and internal gateways. `invokeUrl` is the most public of them.
/// `namespace` is the target namespace, used for a Service rendered without one; `data_plane`
/// is the data plane as templates see it (`{kind, name, spec}`). Endpoints no Service exposes
/// are left out: nothing can call them.
pub fn endpoint_statuses(
    endpoints: &[pb::Endpoint],
    objects: &[Value],
    namespace: &str,
    data_plane: &Value,
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
            let gateway_urls = |gateway: &str| {
                gateway_urls(objects, &data_plane["spec"]["gateway"][gateway], name, port)
            };
            let (external_urls, internal_urls) =
                (gateway_urls("external"), gateway_urls("internal"));
            let invoke_url = [&external_urls, &internal_urls]
                .into_iter()
                .flatten()
                .find_map(|u| u.https.as_ref().or(u.http.as_ref()))
                .map(|u| Address::from_url(u).url())
                .unwrap_or_else(|| address.url());
            Some(pb::EndpointStatus {
                name: endpoint.name.clone(),
                r#type: endpoint.r#type.clone(),
                service_url: Some(address.to_url()),
                invoke_url,
                internal_urls,
                external_urls,
            })
        })
        .collect()
}

/// The URLs of Service `service` port `port` on `gateway` (the data plane's gateway spec):
/// from the first rendered HTTPRoute attached to that gateway with a rule sending traffic to
/// the port — its first hostname, the rule's first path prefix, the gateway's listener ports.
fn gateway_urls(
    objects: &[Value],
    gateway: &Value,
    service: &str,
    port: i32,
) -> Option<pb::EndpointUrls> {
    let gateway_name = gateway["name"].as_str().filter(|n| !n.is_empty())?;
    let (host, path) = objects
        .iter()
        .filter(|o| o["kind"] == "HTTPRoute")
        .filter(|o| {
            o["spec"]["parentRefs"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["name"] == gateway_name))
        })
        .find_map(|route| {
            let rule = route["spec"]["rules"].as_array()?.iter().find(|rule| {
                rule["backendRefs"].as_array().is_some_and(|refs| {
                    refs.iter()
                        .any(|b| b["name"] == service && (b["port"].is_null() || b["port"] == port))
                })
            })?;
            let host = route["spec"]["hostnames"][0].as_str()?.to_string();
            let path = rule["matches"][0]["path"]["value"]
                .as_str()
                .unwrap_or("/")
                .trim_end_matches('/')
                .to_string();
            Some((host, path))
        })?;
    let url = |scheme: &str, listener: &str| {
        gateway[listener]
            .as_i64()
            .filter(|p| *p > 0)
            .map(|p| pb::EndpointUrl {
                scheme: scheme.into(),
                host: host.clone(),
                port: p as i32,
                path: path.clone(),
            })
    };
    Some(pb::EndpointUrls {
        http: url("http", "httpPort"),
        https: url("https", "httpsPort"),
        tls: None,
    })
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
        let statuses = endpoint_statuses(&endpoints, &objects, "ignored", &Value::Null);
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
        let statuses = endpoint_statuses(
            &[endpoint("pg", "TCP", 5432, "")],
            &objects,
            "t",
            &Value::Null,
        );
        assert_eq!(statuses[0].invoke_url, "db.t.svc.cluster.local:5432");
    }

    #[test]
    fn routes_on_the_data_planes_gateways_give_public_urls() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "t"},
                   "spec": {"ports": [{"port": 8080}]}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                   "metadata": {"name": "api-http-external"},
                   "spec": {"parentRefs": [{"name": "gw-ext"}], "hostnames": ["api.apps.example.com"],
                            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                                       "backendRefs": [{"name": "api", "port": 8080}]}]}}),
        ];
        let data_plane = json!({"spec": {"gateway": {
            "external": {"name": "gw-ext", "httpPort": 80, "httpsPort": 443},
            "internal": {"name": "gw-int", "httpPort": 80},
        }}});
        let statuses = endpoint_statuses(
            &[endpoint("http", "HTTP", 8080, "")],
            &objects,
            "t",
            &data_plane,
        );
        let status = &statuses[0];
        assert_eq!(status.invoke_url, "https://api.apps.example.com:443/v1");
        let external = status.external_urls.as_ref().unwrap();
        assert_eq!(external.http.as_ref().unwrap().port, 80);
        assert!(
            status.internal_urls.is_none(),
            "no route on the internal gateway"
        );
        assert_eq!(
            status.service_url.as_ref().unwrap().host,
            "api.t.svc.cluster.local"
        );
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
