//! Bad input gets the right status code, a message naming the object and the field, and
//! leaves nothing half-written.

use tonic::Code;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::{ApplyRequest, GetRequest};
use troupe_tests::{Platform, stderr, success};

use troupe_tests::Client;

/// Applies one YAML document and returns the error status.
async fn apply_err(client: &mut Client, yaml: &str) -> tonic::Status {
    let object = from_yaml(yaml).unwrap().remove(0);
    let request = ApplyRequest {
        resource: Some(object.into()),
        dry_run: false,
    };
    client
        .apply(request)
        .await
        .expect_err("the apply must fail")
}

async fn exists(client: &mut Client, kind: &str, ns: &str, name: &str) -> bool {
    let request = GetRequest {
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
    };
    match client.get(request).await {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => panic!("{s}"),
    }
}

fn assert_status(status: &tonic::Status, code: Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{needle:?} not in {:?}",
            status.message()
        );
    }
}

const COMPONENT: &str = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: NAME, namespace: acme}
spec:
  owner: {projectName: PROJECT}
  componentType: {name: TYPE}
";

fn component(name: &str, project: &str, ty: &str) -> String {
    COMPONENT
        .replace("NAME", name)
        .replace("PROJECT", project)
        .replace("TYPE", ty)
}

#[tokio::test]
async fn names_must_be_dns_labels() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let status = apply_err(
        &mut client,
        &component("Bad_Name", "shop", "deployment/service"),
    )
    .await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["Component acme/Bad_Name", "metadata.name", "'B'"],
    );
    let status = apply_err(
        &mut client,
        "apiVersion: troupe.dev/v1alpha1\nkind: Namespace\nmetadata: {name: x, namespace: acme}\n",
    )
    .await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["metadata.namespace", "cluster-scoped"],
    );
}

#[tokio::test]
async fn a_workload_is_named_after_its_component() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let status = apply_err(
        &mut client,
        "apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: api-workload, namespace: acme}
spec:
  owner: {projectName: shop, componentName: api}
  container: {image: ghcr.io/acme/api:1.0.0}
",
    )
    .await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "Workload acme/api-workload",
            "metadata.name",
            "named after its component: expected \"api\"",
        ],
    );
}

#[tokio::test]
async fn references_must_resolve_when_written() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let status = apply_err(
        &mut client,
        &component("worker", "nope", "deployment/service"),
    )
    .await;
    assert_status(
        &status,
        Code::FailedPrecondition,
        &[
            "Component acme/worker",
            "spec.owner.projectName",
            "Project acme/nope",
            "does not exist",
        ],
    );
    let status = apply_err(
        &mut client,
        &component("worker", "shop", "deployment/missing"),
    )
    .await;
    assert_status(
        &status,
        Code::FailedPrecondition,
        &["spec.componentType.name", "ComponentType acme/missing"],
    );
    let status = apply_err(
        &mut client,
        &component("worker", "shop", "statefulset/service"),
    )
    .await;
    assert_status(
        &status,
        Code::FailedPrecondition,
        &["workloadType \"deployment\"", "deployment/service"],
    );
    let with_trait = format!(
        "{}  traits: [{{name: ingress, instanceName: a}}, {{name: ingress, instanceName: a}}]\n",
        component("worker", "shop", "deployment/service")
    );
    let status = apply_err(&mut client, &with_trait).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["spec.traits[1].instanceName", "more than one"],
    );
    assert!(
        !exists(&mut client, "comp", "acme", "worker").await,
        "nothing half-written"
    );
    let env = "apiVersion: troupe.dev/v1alpha1\nkind: Environment\nmetadata: {name: qa, namespace: acme}\nspec:\n  dataPlaneRef: {kind: ClusterDataPlane, name: shared}\n";
    let status = apply_err(&mut client, env).await;
    assert_status(
        &status,
        Code::FailedPrecondition,
        &["spec.dataPlaneRef", "ClusterDataPlane shared"],
    );
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let project = "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {name: other, namespace: acme}\nspec: {deploymentPipelineRef: default}\n";
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(project)));
    let status = apply_err(
        &mut client,
        &component("api", "other", "deployment/service"),
    )
    .await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "Component acme/api",
            "spec.owner is immutable",
            "\"shop\"",
            "\"other\"",
        ],
    );
    let ct = success(&server.cli(&["get", "ct", "service", "-n", "acme", "-o", "yaml"]));
    let mut object = from_yaml(&ct).unwrap().remove(0);
    let troupe_common::Object::ComponentType(t) = &mut object else {
        panic!("not a ComponentType")
    };
    t.spec.as_mut().unwrap().workload_type = "statefulset".into();
    let status = client
        .apply(ApplyRequest {
            resource: Some(object.into()),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "ComponentType acme/service",
            "spec.workloadType is immutable",
        ],
    );
}

#[tokio::test]
async fn stale_resource_version_is_aborted() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let yaml = success(&server.cli(&["get", "proj", "shop", "-n", "acme", "-o", "yaml"]));
    assert!(yaml.contains("description: The online shop."), "{yaml}");
    let changed = yaml.replace("The online shop.", "first");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&changed)));
    let status = apply_err(&mut client, &yaml.replace("The online shop.", "second")).await;
    assert_status(
        &status,
        Code::Aborted,
        &["Project acme/shop", "resourceVersion"],
    );
    let now = success(&server.cli(&["get", "proj", "shop", "-n", "acme", "-o", "yaml"]));
    assert!(now.contains("description: first"), "{now}");
}

#[tokio::test]
async fn embedded_json_schemas_must_be_valid() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let ct = "apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: broken, namespace: acme}
spec:
  workloadType: deployment
  parameters:
    type: object
    properties:
      port: {type: integr}
  resources:
    - id: deployment
      template: {apiVersion: apps/v1, kind: Deployment}
";
    let status = apply_err(&mut client, ct).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "ComponentType acme/broken",
            "spec.parameters.properties.port.type",
            "not a valid JSON Schema",
        ],
    );
    assert!(!exists(&mut client, "ct", "acme", "broken").await);
}

#[tokio::test]
async fn unknown_fields_and_kinds_and_malformed_yaml_are_refused_whole() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    // A valid document followed by a broken one: the CLI applies nothing.
    let mixed = "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {name: first, namespace: acme}\nspec: {deploymentPipelineRef: default}\n---\nkind: Project\n  bad: [indent\n";
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(mixed));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("malformed YAML"), "{}", stderr(&out));
    assert!(
        !exists(&mut client, "proj", "acme", "first").await,
        "nothing from a malformed file is applied"
    );

    let typo = "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {name: first, namespace: acme}\nspec: {deploymentPipelineRf: default}\n";
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(typo));
    assert!(
        stderr(&out).contains("Project \"first\"") && stderr(&out).contains("deploymentPipelineRf"),
        "{}",
        stderr(&out)
    );

    let gadget = "apiVersion: troupe.dev/v1alpha1\nkind: Gadget\nmetadata: {name: g}\n";
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(gadget));
    assert!(
        stderr(&out).contains("unknown kind \"Gadget\""),
        "{}",
        stderr(&out)
    );

    let status = client
        .get(GetRequest {
            kind: "gadget".into(),
            namespace: "acme".into(),
            name: "g".into(),
        })
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["kind", "gadget"]);
    let status = client.apply(ApplyRequest::default()).await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["resource"]);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let server = Platform::builder()
        .examples()
        .args(&["--max-message-bytes", "65536"])
        .start();
    let mut client = server.client().await;
    let big = format!(
        "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {{name: big, namespace: acme}}\nspec: {{deploymentPipelineRef: default, description: \"{}\"}}\n",
        "x".repeat(100_000)
    );
    let status = apply_err(&mut client, &big).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("65536"), "{status:?}");
    assert!(!exists(&mut client, "proj", "acme", "big").await);
}

#[tokio::test]
async fn parameters_are_validated_against_the_schemas_when_written() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let bad_params = format!(
        "{}  parameters: {{port: 70000, prot: 1}}\n",
        component("worker", "shop", "deployment/service")
    );
    let status = apply_err(&mut client, &bad_params).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "Component acme/worker",
            "spec.parameters",
            "/port: 70000 is greater than the maximum of 65535",
            "/prot: unknown field \"prot\"",
        ],
    );
    let bad_trait = format!(
        "{}  traits: [{{name: ingress, instanceName: public, parameters: {{path: 7}}}}]\n",
        component("worker", "shop", "deployment/service")
    );
    let status = apply_err(&mut client, &bad_trait).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "spec.traits[0].parameters",
            "\"host\" is a required property",
            "/path",
        ],
    );
    assert!(
        !exists(&mut client, "comp", "acme", "worker").await,
        "nothing half-written"
    );
    // Defaults fill what is left out: a component with no parameters at all is valid.
    let fine = component("worker", "shop", "deployment/service");
    let object = from_yaml(&fine).unwrap().remove(0);
    client
        .apply(ApplyRequest {
            resource: Some(object.into()),
            dry_run: false,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn template_syntax_errors_are_refused_when_the_type_is_written() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let ct = "apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: broken, namespace: acme}
spec:
  workloadType: deployment
  resources:
    - id: deployment
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: \"${{ metadata.name | upper( }}\"}
";
    let status = apply_err(&mut client, ct).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "ComponentType acme/broken",
            "spec.resources[0].template.metadata.name",
            "metadata.name | upper(",
        ],
    );
    let bad_when = ct.replace(
        "    - id: deployment\n",
        "    - id: deployment\n      includeWhen: \"yes\"\n",
    );
    let status = apply_err(&mut client, &bad_when).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["spec.resources[0].includeWhen"],
    );
    assert!(!exists(&mut client, "ct", "acme", "broken").await);
}

#[tokio::test]
async fn binding_overrides_are_validated_against_the_release() {
    // The last apply binds production directly: its edge requires nothing here.
    let server = Platform::builder().examples().ungated().start();
    let mut client = server.client().await;
    let out = success(&server.cli(&["release", "create", "api", "-n", "acme"]));
    let release = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("componentrelease/");
    let binding = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {{name: api-production, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  environment: production
  releaseName: {release}
  componentTypeEnvironmentConfigs: {{replicas: -1}}
"
    );
    let status = apply_err(&mut client, &binding).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "ReleaseBinding acme/api-production",
            "spec.componentTypeEnvironmentConfigs",
            "/replicas",
        ],
    );
    let unknown_instance = binding.replace(
        "componentTypeEnvironmentConfigs: {replicas: -1}",
        "traitEnvironmentConfigs: {private: {host: x}}",
    );
    let status = apply_err(&mut client, &unknown_instance).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["spec.traitEnvironmentConfigs.private", "it has: public"],
    );
    let fine = binding.replace("replicas: -1", "replicas: 3");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&fine)));
}

#[tokio::test]
async fn a_pipeline_must_be_a_graph_with_one_root_and_gates_that_can_pass() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let pipeline = |paths: &str| {
        format!(
            "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {{name: broken, namespace: acme}}
spec:
  promotionPaths:
{paths}"
        )
    };
    let cases: [(&str, &str, &[&str]); 8] = [
        (
            "    - {sourceEnvironment: development, targets: [{environment: staging}]}
    - {sourceEnvironment: staging, targets: [{environment: development}]}
",
            "a cycle",
            &["spec.promotionPaths", "every source is also a target"],
        ),
        (
            "    - {sourceEnvironment: development, targets: [{environment: staging}]}
    - {sourceEnvironment: staging, targets: [{environment: production}]}
    - {sourceEnvironment: production, targets: [{environment: staging}]}
",
            "a cycle below the root",
            &["has a cycle: staging → production → staging"],
        ),
        (
            "    - {sourceEnvironment: development, targets: [{environment: production}]}
    - {sourceEnvironment: staging, targets: [{environment: production}]}
",
            "two roots",
            &["single first environment", "development, staging"],
        ),
        (
            "    - {sourceEnvironment: development, targets: [{environment: staging, gates: [{name: g, type: vibes}]}]}
",
            "an unknown gate type",
            &["spec.promotionPaths[0].targets[0].gates[0].type", "\"vibes\" is not one of healthy, soak, check"],
        ),
        (
            "    - {sourceEnvironment: development, targets: [{environment: staging, gates: [{name: g, type: soak}]}]}
",
            "a soak without a duration",
            &["gates[0].soakDurationSeconds", "required for a soak gate"],
        ),
        (
            "    - {sourceEnvironment: development, targets: [{environment: staging, requiresApproval: true, approvers: [alice], requiredApprovals: 2}]}
",
            "more approvals than approvers",
            &["targets[0].requiredApprovals", "2 approvals can never come from 1 approver(s)"],
        ),
        (
            "    - {sourceEnvironment: development, targets: [{environment: staging, approvers: [alice]}]}
",
            "approvers without approval",
            &["targets[0].approvers", "requiresApproval is false"],
        ),
        (
            "    - {sourceEnvironment: development, targets: [{environment: qa}]}
",
            "an unknown environment",
            &["spec.promotionPaths[0].targets[0].environment", "Environment acme/qa"],
        ),
    ];
    for (paths, what, needles) in cases {
        let status = apply_err(&mut client, &pipeline(paths)).await;
        let code = if what == "an unknown environment" {
            Code::FailedPrecondition
        } else {
            Code::InvalidArgument
        };
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert_status(&status, code, needles);
        assert!(
            status.message().contains("DeploymentPipeline acme/broken"),
            "{what}: {status:?}"
        );
        assert!(
            !exists(&mut client, "pipeline", "acme", "broken").await,
            "{what}"
        );
    }
}

#[tokio::test]
async fn promotion_requests_name_what_is_wrong() {
    let server = Platform::builder().examples().people().start();
    for (args, code, needle) in [
        (
            vec!["promote", "nope", "-n", "acme", "--to", "staging"],
            "NotFound",
            "Component acme/nope not found",
        ),
        (
            vec!["promote", "api", "-n", "acme", "--to", "staging"],
            "FailedPrecondition",
            "api is not deployed in development: nothing to promote",
        ),
        (
            vec!["approve", "api-staging-9", "-n", "acme", "--as", "alice"],
            "NotFound",
            "Promotion acme/api-staging-9 not found",
        ),
        (
            vec!["rollback", "api", "-n", "acme", "--env", "staging"],
            "FailedPrecondition",
            "not deployed in staging: nothing to roll back",
        ),
    ] {
        let out = server.cli(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(needle) && err.contains(code),
            "{args:?}: {err}"
        );
    }
    // The refused promotion is on record.
    let history = success(&server.cli(&["history", "api", "-n", "acme"]));
    assert!(history.contains("Refused"), "{history}");
}
