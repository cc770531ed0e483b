//! The rendered NetworkPolicies of a whole tenant, evaluated: between every pair of pods, on
//! every port in play, exactly the flows the platform declares are allowed.
//!
//! The tenant `acme` has two projects, `shop` and `billing`, each deployed to `dev` and
//! `prod` (four cells). Around them: the data plane's two gateways, each namespace with one
//! gateway pod and one other pod; kube-dns; two addresses outside the cluster; and a pod of
//! another tenant carrying the very labels of `shop/api`.

use super::evaluator::{Cluster, Pod};
use super::*;
use crate::render::context::target_namespace;

const ENVIRONMENTS: [&str; 2] = ["dev", "prod"];

/// Who may reach each component's port: `(source, component, port)`, in one environment.
/// `cell P` is every pod of project P's cell in that environment; other sources are pods by
/// name (a component name means its pod in the same environment).
const ADMITTED: &[(&str, &str, &str)] = &[
    // web: `external`.
    ("cell shop", "web", "8080/TCP"),
    ("gw-external", "web", "8080/TCP"),
    // api (port 80, pods on 8081): `namespace` and `internal`.
    ("cell shop", "api", "8081/TCP"),
    ("cell billing", "api", "8081/TCP"),
    ("gw-internal", "api", "8081/TCP"),
    // db: `project` only; billing/ledger's connection to it is refused.
    ("cell shop", "db", "5432/TCP"),
    ("cell shop", "metrics", "8125/UDP"),
    ("cell billing", "invoices", "9090/TCP"),
    // ledger: `namespace`.
    ("cell billing", "ledger", "7070/TCP"),
    ("cell shop", "ledger", "7070/TCP"),
    // cron has no endpoint: nobody.
];

/// Where `cron`, the one component that controls its egress, may send: `(destination,
/// port)`, `*` for any pod. Its connection to api, DNS, and its CIDR on 443.
const CRON_SENDS: &[(&str, &str)] = &[
    ("api", "8081/TCP"),
    ("*", "53/UDP"),
    ("*", "53/TCP"),
    ("outside-allowed", "443/TCP"),
];

/// A component as its project declares it.
struct Spec {
    project: &'static str,
    component: &'static str,
    endpoints: Vec<pb::Endpoint>,
    /// `(project, component, endpoint, visibility)` of each connection.
    connections: Vec<(&'static str, &'static str, &'static str, &'static str)>,
    egress: Option<Vec<pb::EgressRule>>,
}

fn mk_spec(project: &'static str, component: &'static str, endpoints: Vec<pb::Endpoint>) -> Spec {
    Spec {
        project,
        component,
        endpoints,
        connections: Vec::new(),
        egress: None,
    }
}

fn platform() -> Vec<Spec> {
    let web = Spec {
        connections: vec![("shop", "api", "http", "project")],
        ..mk_spec(
            "shop",
            "web",
            vec![mk_endpoint("http", "HTTP", 8080, 0, &["external"])],
        )
    };
    let api = Spec {
        connections: vec![("shop", "db", "pg", "project")],
        ..mk_spec(
            "shop",
            "api",
            vec![mk_endpoint(
                "http",
                "HTTP",
                80,
                8081,
                &["namespace", "internal"],
            )],
        )
    };
    let cron = Spec {
        connections: vec![("shop", "api", "http", "project")],
        egress: Some(vec![mk_cidr("192.168.50.0/24", &[443])]),
        ..mk_spec("shop", "cron", vec![])
    };
    let invoices = Spec {
        connections: vec![("shop", "api", "http", "namespace")],
        ..mk_spec(
            "billing",
            "invoices",
            vec![mk_endpoint("http", "HTTP", 9090, 0, &["project"])],
        )
    };
    let ledger = Spec {
        // Neither is permitted: `project` across projects, and db is not `namespace`.
        connections: vec![
            ("shop", "api", "http", "project"),
            ("shop", "db", "pg", "namespace"),
        ],
        ..mk_spec(
            "billing",
            "ledger",
            vec![mk_endpoint("grpc", "gRPC", 7070, 0, &["namespace"])],
        )
    };
    vec![
        web,
        api,
        mk_spec("shop", "db", vec![mk_endpoint("pg", "TCP", 5432, 0, &[])]),
        cron,
        mk_spec(
            "shop",
            "metrics",
            vec![mk_endpoint("statsd", "UDP", 8125, 0, &[])],
        ),
        invoices,
        ledger,
    ]
}

fn pod_labels(project: &str, component: &str, environment: &str) -> evaluator::Labels {
    mk_labels(&[
        ("troupe.dev/project", project),
        ("troupe.dev/component", component),
        ("troupe.dev/environment", environment),
    ])
}

/// The endpoint a connection names, with its pod port and protocol.
fn resolve(specs: &[Spec], project: &str, component: &str, endpoint: &str) -> (i32, &'static str) {
    let target = specs
        .iter()
        .find(|s| s.project == project && s.component == component);
    let endpoint = target
        .unwrap()
        .endpoints
        .iter()
        .find(|e| e.name == endpoint)
        .unwrap();
    let port = if endpoint.target_port > 0 {
        endpoint.target_port
    } else {
        endpoint.port
    };
    (
        port,
        if endpoint.r#type == "UDP" {
            "UDP"
        } else {
            "TCP"
        },
    )
}

/// What the controllers would hand the renderer for `spec` in `environment`.
fn case(specs: &[Spec], spec: &Spec, environment: &str) -> Case {
    let mut consumers: Vec<Consumer> = specs
        .iter()
        .flat_map(|s| s.connections.iter().map(move |c| (s, c)))
        .filter(|(_, (project, component, _, _))| {
            (*project, *component) == (spec.project, spec.component)
        })
        .map(|(s, (_, _, endpoint, visibility))| {
            mk_consumer(s.project, s.component, endpoint, visibility)
        })
        .collect();
    consumers.sort();
    let egress = spec.egress.as_ref().map(|rules| Egress {
        destinations: spec
            .connections
            .iter()
            .map(|(project, component, endpoint, _)| {
                let (port, protocol) = resolve(specs, project, component, endpoint);
                mk_destination(project, component, port, protocol)
            })
            .collect(),
        rules: rules.clone(),
    });
    Case {
        endpoints: spec.endpoints.clone(),
        gateways: vec![
            mk_gateway(
                "internal",
                "gateway-internal",
                &[("app.kubernetes.io/name", "internal-gateway")],
            ),
            mk_gateway(
                "external",
                "gateway-external",
                &[("app.kubernetes.io/name", "external-gateway")],
            ),
        ],
        consumers,
        egress,
        environment: environment.into(),
        ..mk_case(spec.project, spec.component)
    }
}

/// The cluster with every component's rendered policies applied.
fn cluster(specs: &[Spec]) -> Cluster {
    let mut cluster = Cluster::default();
    for (e, environment) in ENVIRONMENTS.iter().enumerate() {
        for project in ["shop", "billing"] {
            let labels = [
                ("troupe.dev/namespace", TENANT),
                ("troupe.dev/project", project),
                ("troupe.dev/environment", environment),
            ];
            cluster.namespace(&target_namespace(TENANT, project, environment), &labels);
        }
        for (i, spec) in specs.iter().enumerate() {
            let namespace = target_namespace(TENANT, spec.project, environment);
            let labels = pod_labels(spec.project, spec.component, environment);
            let name = format!("{}@{environment}", spec.component);
            cluster.pod(&name, &namespace, labels, &format!("10.{e}.{i}.1"));
            for policy in case(specs, spec, environment).render().objects {
                cluster.apply(policy);
            }
        }
    }
    let stranger = [
        ("troupe.dev/namespace", "globex"),
        ("troupe.dev/project", "shop"),
        ("troupe.dev/environment", "dev"),
    ];
    cluster.namespace("globex-shop-dev", &stranger);
    cluster.pod(
        "globex-api@dev",
        "globex-shop-dev",
        pod_labels("shop", "api", "dev"),
        "10.8.0.1",
    );
    for gateway in ["internal", "external"] {
        let namespace = format!("gateway-{gateway}");
        cluster.namespace(&namespace, &[]);
        let labels = mk_labels(&[("app.kubernetes.io/name", &format!("{gateway}-gateway"))]);
        cluster.pod(
            &format!("gw-{gateway}"),
            &namespace,
            labels,
            &format!("10.9.0.{}", gateway.len()),
        );
        let other = mk_labels(&[("app.kubernetes.io/name", "other")]);
        cluster.pod(
            &format!("gw-{gateway}-other"),
            &namespace,
            other,
            &format!("10.9.1.{}", gateway.len()),
        );
    }
    cluster.namespace("kube-system", &[]);
    cluster.pod(
        "dns",
        "kube-system",
        mk_labels(&[("k8s-app", "kube-dns")]),
        "10.9.2.1",
    );
    cluster.namespace("world", &[]);
    cluster.pod("outside-allowed", "world", mk_labels(&[]), "192.168.50.10");
    cluster.pod("outside-other", "world", mk_labels(&[]), "192.168.60.10");
    cluster
}

/// The component and environment of a pod Troupe rendered policies for.
fn managed<'a>(specs: &'a [Spec], pod: &Pod) -> Option<(&'a Spec, &'static str)> {
    let (component, environment) = pod.name.split_once('@')?;
    let environment = ENVIRONMENTS.into_iter().find(|e| *e == environment)?;
    let spec = specs.iter().find(|s| s.component == component)?;
    (pod.namespace == target_namespace(TENANT, spec.project, environment))
        .then_some((spec, environment))
}

/// Whether `token` of a table names `pod`, for a flow in `environment`.
fn names(token: &str, pod: &Pod, environment: &str) -> bool {
    match token.strip_prefix("cell ") {
        Some(project) => pod.namespace == target_namespace(TENANT, project, environment),
        None => token == "*" || pod.name == token || pod.name == format!("{token}@{environment}"),
    }
}

/// The declared answer: a component's pod admits only what [`ADMITTED`] lists, other pods
/// admit anything (no policy selects them); cron sends only what [`CRON_SENDS`] lists,
/// everything else may send anywhere.
fn declared(specs: &[Spec], src: &Pod, dst: &Pod, port: &str) -> bool {
    let admitted = managed(specs, dst).is_none_or(|(spec, env)| {
        ADMITTED
            .iter()
            .any(|(from, to, p)| *to == spec.component && *p == port && names(from, src, env))
    });
    let sent = match managed(specs, src) {
        Some((spec, env)) if spec.component == "cron" => CRON_SENDS
            .iter()
            .any(|(to, p)| *p == port && names(to, dst, env)),
        _ => true,
    };
    admitted && sent
}

#[test]
fn exactly_the_declared_flows_are_allowed() {
    let specs = platform();
    let cluster = cluster(&specs);
    let mut numbers: Vec<i32> = vec![53, 443];
    numbers.extend(
        ADMITTED
            .iter()
            .map(|(_, _, p)| p.split_once('/').unwrap().0.parse::<i32>().unwrap()),
    );
    numbers.sort();
    numbers.dedup();
    let (mut unexpected, mut missing, mut into_components) = (Vec::new(), Vec::new(), 0);
    for src in &cluster.pods {
        for dst in cluster.pods.iter().filter(|d| d.name != src.name) {
            for number in &numbers {
                for protocol in ["TCP", "UDP"] {
                    let port = format!("{number}/{protocol}");
                    let allowed = cluster.allowed(src, dst, *number, protocol);
                    let flow = format!("{} -> {} {port}", src.name, dst.name);
                    match (allowed, declared(&specs, src, dst, &port)) {
                        (true, false) => unexpected.push(flow),
                        (false, true) => missing.push(flow),
                        (true, true) if managed(&specs, dst).is_some() => into_components += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "allowed but not declared:\n  {}\ndeclared but denied:\n  {}",
        unexpected.join("\n  "),
        missing.join("\n  ")
    );
    // Per environment, from the tables: web 3 + gw-external, api 4 + 2 + gw-internal, db 3,
    // metrics 3, invoices 1, ledger 1 + 4 (a cell's pods but the target itself, and cron only
    // to api). A renderer and evaluator that agreed on allowing nothing would fail here.
    assert_eq!(
        into_components,
        2 * (4 + 7 + 3 + 3 + 1 + 5),
        "flows into components"
    );
}
