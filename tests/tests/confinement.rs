//! What reaches a cluster is decided by the platform, through the real server, CLI and agent:
//! rendered objects follow Kubernetes' naming rules, stay in their environment's namespace,
//! and have kinds the data plane's resource policy allows. A render that breaks a rule fails
//! with a message naming the object, the field and the rule, and nothing is stored or sent.
//! Tenants whose readable namespace names would meet land in two namespaces.

use serde_json::Value;
use troupe_tests::{
    PATIENCE, Platform, Server, check, eventually, release_files, stderr, stdout, success,
};

/// A ClusterRoleBinding of the component's default service account to `cluster-admin`, as a
/// resource of the `service` ComponentType (in `troupe get -o yaml` layout).
const ADMIN_RESOURCE: &str = "  resources:
  - id: admin
    template:
      apiVersion: rbac.authorization.k8s.io/v1
      kind: ClusterRoleBinding
      metadata: {name: '${{ metadata.componentName }}-admin'}
      roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
      subjects:
      - {kind: ServiceAccount, name: default, namespace: '${{ metadata.namespace }}'}
";

const ADMIN_REFUSED: &str = "rendered object 0 (ClusterRoleBinding/api-admin): kind \
    ClusterRoleBinding (rbac.authorization.k8s.io) is cluster-scoped and DataPlane acme/local \
    does not allow it: add {group: \"rbac.authorization.k8s.io\", kind: ClusterRoleBinding} to \
    spec.resourcePolicy.allowedClusterKinds there to allow it";

/// Applies `kind NAME` (in acme) back after `edit` changes its YAML.
fn edit(server: &Server, kind: &str, name: &str, edit: impl Fn(&str) -> String) {
    let yaml = success(&server.cli(&["get", kind, name, "-n", "acme", "-o", "yaml"]));
    let edited = edit(&yaml);
    assert_ne!(yaml, edited, "the edit must change something");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
}

/// `troupe render api -n NAMESPACE --env ENV -o json`: the objects, or the error text.
fn render(server: &Server, namespace: &str, env: &str) -> Result<Vec<Value>, String> {
    let out = server.cli(&["render", "api", "-n", namespace, "--env", env, "-o", "json"]);
    if out.status.success() {
        Ok(serde_json::from_str(&stdout(&out)).expect("JSON from troupe render"))
    } else {
        Err(stderr(&out))
    }
}

fn render_error(server: &Server) -> String {
    render(server, "acme", "development").expect_err("the render should fail")
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

/// The binding's `Rendered` condition once it is false, as `(reason, message)`.
fn render_failure(server: &Server, binding: &str) -> (String, String) {
    eventually(
        &format!("binding {binding} says its render failed"),
        PATIENCE,
        || {
            let rb = server.get_json("rb", "acme", binding).unwrap_or_default();
            let rendered = rb["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Rendered"))
                .cloned()
                .unwrap_or_default();
            check(rendered, |c| c["status"] == "False").map(|c| {
                let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (text("reason"), text("message"))
            })
        },
    )
}

#[test]
fn a_cluster_role_binding_fails_the_render_and_reaches_no_agent() {
    let platform = Platform::builder()
        .examples()
        .agent("acme/local", "local")
        .start();
    let target = platform.agent_target("local");
    let good = platform.cut_release("api");
    platform.bind("api", "development", &good, "");
    // Applied as a whole (its status says so), not caught halfway through its files.
    let stored = eventually("the agent applies the first release", PATIENCE, || {
        check(
            platform.get_json("release", "acme", "api-development"),
            |r| {
                r.as_ref().is_some_and(|r| {
                    r["status"]["appliedGeneration"] == r["metadata"]["generation"]
                })
            },
        )
    })
    .unwrap();
    let files = release_files(&target, "acme", "api-development");
    assert!(
        files.keys().any(|k| k.starts_with("deployment.apps_")),
        "{files:#?}"
    );

    edit(&platform, "ct", "service", |y| {
        y.replace("  resources:\n", ADMIN_RESOURCE)
    });
    let bad = platform.cut_release("api");
    assert_ne!(bad, good);
    assert_mentions(&render_error(&platform), &[ADMIN_REFUSED]);

    // A binding moved to the bad release fails, and its Release stays as it was.
    platform.bind("api", "development", &bad, "");
    let (reason, message) = render_failure(&platform, "api-development");
    assert_eq!(reason, "RenderFailed");
    assert_mentions(&message, &[ADMIN_REFUSED]);
    let after = platform
        .get_json("release", "acme", "api-development")
        .unwrap();
    assert_eq!(after["spec"], stored["spec"]);
    // A new binding to it stores no Release at all.
    platform.bind("api", "staging", &bad, "");
    let (_, message) = render_failure(&platform, "api-staging");
    assert_mentions(&message, &[ADMIN_REFUSED]);
    assert_eq!(platform.get_json("release", "acme", "api-staging"), None);
    // The agent still holds exactly the first release, and nothing for staging.
    assert_eq!(release_files(&target, "acme", "api-development"), files);
    assert!(release_files(&target, "acme", "api-staging").is_empty());
    let everything: Vec<String> = walk(&target);
    assert!(
        everything.iter().all(|f| !f.contains("clusterrolebinding")),
        "{everything:#?}"
    );
}

/// Every file under `dir`, as paths.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[test]
fn a_data_plane_that_allows_a_cluster_kind_renders_it_without_a_namespace() {
    let platform = Platform::builder().examples().start();
    // The agent checks again with its own policy, which must allow the kind too.
    let agent = platform.register_agent_with(
        "acme/local",
        "local",
        &[
            "--allow-cluster-kinds",
            "rbac.authorization.k8s.io/ClusterRoleBinding",
        ],
    );
    edit(&platform, "ct", "service", |y| {
        y.replace("  resources:\n", ADMIN_RESOURCE)
    });

    // Listing a cluster-scoped kind among the namespaced ones is refused, naming the field.
    let with = |field: &str| {
        format!(
            "{}  resourcePolicy:\n    {field}:\n    - {{group: rbac.authorization.k8s.io, kind: ClusterRoleBinding}}\n",
            example_data_plane()
        )
    };
    let out = platform.cli_with_stdin(&["apply", "-f", "-"], Some(&with("allowedKinds")));
    assert!(!out.status.success());
    assert_mentions(
        &stderr(&out),
        &[
            "DataPlane acme/local: spec.resourcePolicy.allowedKinds[0]: ClusterRoleBinding \
             (rbac.authorization.k8s.io) is cluster-scoped: list it in allowedClusterKinds",
            "InvalidArgument",
        ],
    );
    assert_mentions(&render_error(&platform), &[ADMIN_REFUSED]);

    success(&platform.cli_with_stdin(&["apply", "-f", "-"], Some(&with("allowedClusterKinds"))));
    let objects = render(&platform, "acme", "development").unwrap();
    let admin = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRoleBinding")
        .expect("the ClusterRoleBinding renders");
    assert_eq!(admin["metadata"].get("namespace"), None);
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["metadata"]["namespace"], "acme-shop-development");

    // And it reaches the agent, as a cluster-scoped file.
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    eventually("the agent writes the ClusterRoleBinding", PATIENCE, || {
        check(
            release_files(&agent.target, "acme", "api-development"),
            |f| f.contains_key("clusterrolebinding.rbac.authorization.k8s.io_api-admin.yaml"),
        )
    });
}

#[test]
fn objects_outside_the_environments_namespace_are_refused() {
    let platform = Platform::builder().examples().start();
    edit(&platform, "trait", "ingress", |y| {
        y.replace(
            "namespace: ${{ metadata.namespace }}",
            "namespace: kube-system",
        )
    });
    assert_mentions(
        &render_error(&platform),
        &[
            "rendered object 4 (Ingress/api-public): metadata.namespace is \"kube-system\", \
           outside the environment's namespace \"acme-shop-development\"",
        ],
    );
    // A binding to it fails the same way, and stores nothing.
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    let (reason, message) = render_failure(&platform, "api-development");
    assert_eq!(reason, "RenderFailed");
    assert_mentions(&message, &["metadata.namespace is \"kube-system\""]);
    assert_eq!(
        platform.get_json("release", "acme", "api-development"),
        None
    );
}

#[test]
fn odd_kinds_and_names_are_refused_at_render() {
    let platform = Platform::builder().examples().start();
    // The trait as first written, without its resourceVersion, so each case applies over the
    // last one.
    let ingress: String =
        success(&platform.cli(&["get", "trait", "ingress", "-n", "acme", "-o", "yaml"]))
            .lines()
            .filter(|l| !l.contains("resourceVersion:"))
            .map(|l| format!("{l}\n"))
            .collect();
    let cases = [
        (
            ("kind: Ingress", "kind: ../../etc"),
            "rendered object 4 (../../etc/api-public): kind \"../../etc\" is not a kind",
        ),
        (
            (
                "name: ${{ metadata.componentName }}-${{ trait.instanceName }}",
                "name: /etc/passwd",
            ),
            "rendered object 4 (Ingress//etc/passwd): metadata.name \"/etc/passwd\" is not a \
             DNS-1123 subdomain",
        ),
        (
            (
                "name: ${{ metadata.componentName }}-${{ trait.instanceName }}",
                "name: ../../${{ metadata.componentName }}",
            ),
            "metadata.name \"../../api\" is not a DNS-1123 subdomain",
        ),
        (
            (
                "apiVersion: networking.k8s.io/v1",
                "apiVersion: ../networking/v1",
            ),
            "apiVersion \"../networking/v1\"",
        ),
    ];
    for ((from, to), expected) in cases {
        let edited = ingress.replace(from, to);
        assert_ne!(edited, ingress, "{from} is in the trait");
        success(&platform.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
        assert_mentions(&render_error(&platform), &[expected]);
    }
}

/// The example platform's DataPlane acme/local, as written in `examples/` (its spec last).
fn example_data_plane() -> String {
    let yaml = std::fs::read_to_string(troupe_tests::examples_dir().join("platform.yaml"))
        .expect("the example platform");
    let document = yaml
        .split("\n---\n")
        .find(|d| d.contains("\nkind: DataPlane\n"))
        .expect("a DataPlane in the examples");
    format!("{}\n", document.trim_end())
}

/// The example platform for tenant `namespace` with project `project` (instead of acme and
/// shop).
fn tenant(namespace: &str, project: &str) -> String {
    let yaml = std::fs::read_to_string(troupe_tests::examples_dir().join("platform.yaml"))
        .expect("the example platform");
    yaml.replace("namespace: acme", &format!("namespace: {namespace}"))
        .replace("\n  name: acme\n", &format!("\n  name: {namespace}\n"))
        .replace("projectName: shop", &format!("projectName: {project}"))
        .replace("\n  name: shop\n", &format!("\n  name: {project}\n"))
}

#[test]
fn tenants_whose_readable_names_meet_land_in_two_namespaces() {
    let platform = Platform::builder()
        .apply(&tenant("team", "a-b"))
        .apply(&tenant("team-a", "b"))
        .start();
    let namespaces = |ns: &str| -> Vec<String> {
        let objects = render(&platform, ns, "production").unwrap();
        let mut names: Vec<String> = objects
            .iter()
            .map(|o| o["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect();
        names.dedup();
        names
    };
    let first = namespaces("team");
    let second = namespaces("team-a");
    assert_eq!(first, ["team-a-b-production"]);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second);
    assert!(second[0].starts_with("team-a-b-production--"), "{second:?}");
}

#[test]
fn an_object_that_changes_namespace_leaves_no_copy_behind() {
    // The way existing releases move to a new target namespace: the next render puts the
    // object elsewhere, and the agent prunes what left the release. Here a policy change
    // makes a kind cluster-scoped, so its object leaves the target namespace. The agent
    // checks kinds again with its own policy, so it is started with the same policy each time.
    let platform = Platform::builder().examples().start();
    let usual = "apps/Deployment,/ConfigMap,/Service,gateway.networking.k8s.io/HTTPRoute";
    let agent = platform.register_agent_with(
        "acme/local",
        "local",
        &["--allow-kinds", &format!("{usual},example.com/Gadget")],
    );
    edit(&platform, "trait", "ingress", |y| {
        y.replace(
            "apiVersion: networking.k8s.io/v1",
            "apiVersion: example.com/v1",
        )
        .replace("kind: Ingress", "kind: Gadget")
        .lines()
        .filter(|l| l.trim() != "namespace: ${{ metadata.namespace }}")
        .map(|l| format!("{l}\n"))
        .collect()
    });
    let kinds = "    allowedKinds:
    - {group: apps, kind: Deployment}
    - {group: '', kind: ConfigMap}
    - {group: '', kind: Service}
    - {group: gateway.networking.k8s.io, kind: HTTPRoute}
    - {group: example.com, kind: Gadget}
";
    let namespaced = format!("{}  resourcePolicy:\n{kinds}", example_data_plane());
    success(&platform.cli_with_stdin(&["apply", "-f", "-"], Some(&namespaced)));
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    let target = platform.agent_target("local");
    let files = |wanted: &'static str| {
        eventually(&format!("the agent holds {wanted}"), PATIENCE, || {
            check(release_files(&target, "acme", "api-development"), |f| {
                f.contains_key(wanted)
            })
        })
    };
    let before = files("gadget.example.com_acme-shop-development_api-public.yaml");
    assert!(before.contains_key("deployment.apps_acme-shop-development_api.yaml"));

    let cluster = format!(
        "{namespaced}    allowedClusterKinds:\n    - {{group: example.com, kind: Gadget}}\n"
    );
    agent.kill();
    success(&platform.cli_with_stdin(&["apply", "-f", "-"], Some(&cluster)));
    let _agent = platform.register_agent_with(
        "acme/local",
        "local",
        &[
            "--allow-kinds",
            usual,
            "--allow-cluster-kinds",
            "example.com/Gadget",
        ],
    );
    let after = eventually("the old Gadget file is pruned", PATIENCE, || {
        check(files("gadget.example.com_api-public.yaml"), |f| {
            !f.contains_key("gadget.example.com_acme-shop-development_api-public.yaml")
        })
    });
    assert_eq!(after.len(), before.len(), "{:#?}", after.keys());
}
