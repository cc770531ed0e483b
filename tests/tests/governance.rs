//! Governance end to end: what only the control plane writes (Releases, ComponentReleases,
//! Promotions) is refused to users, through the generated client and `troupe apply -f`
//! alike; a rollback goes only to a release the environment ran, needing no approval, and
//! anything else must be promoted; a ReleaseBinding applied directly sets its release only
//! where the pipeline requires no approval or gate on the way in; a template that names no
//! object is refused when written.

use serde_json::Value;
use tonic::Code;
use troupe_common::Object;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::{self as pb, ApplyRequest, DeleteRequest, GetRequest};
use troupe_tests::{PATIENCE, Platform, Server, check, eventually, examples_dir, stderr, success};

use troupe_tests::Client;

async fn apply(client: &mut Client, object: Object) -> Result<pb::ApplyResponse, tonic::Status> {
    let request = ApplyRequest {
        resource: Some(object.into()),
        dry_run: false,
    };
    client.apply(request).await.map(|r| r.into_inner())
}

async fn get(client: &mut Client, kind: &str, name: &str) -> Result<Object, tonic::Status> {
    let request = GetRequest {
        kind: kind.into(),
        namespace: "acme".into(),
        name: name.into(),
    };
    let response = client.get(request).await?.into_inner();
    Ok(response.resource.and_then(|r| r.object).expect("an object"))
}

fn assert_status(status: &tonic::Status, code: Code, message: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), message);
}

/// A Release a user might hand in (everything it names exists): it would bind the namespace's
/// default service account to cluster-admin on data plane acme/local.
const FORGED_RELEASE: &str = "apiVersion: troupe.dev/v1alpha1
kind: Release
metadata: {name: api-production, namespace: acme}
spec:
  owner: {projectName: shop, componentName: api}
  environment: production
  dataPlaneRef: {kind: DataPlane, name: local}
  contentHash: trust-me
  resources:
    - id: ClusterRoleBinding/pwned
      object:
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRoleBinding
        metadata: {name: pwned}
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
        subjects: [{kind: ServiceAccount, name: default, namespace: acme}]
";

const RELEASE_REFUSED: &str = "Release acme/api-production is written by the control plane: the binding controller renders it from its ReleaseBinding; change the ReleaseBinding, or use `troupe promote` or `troupe rollback`";

#[tokio::test]
async fn releases_and_component_releases_are_written_by_the_control_plane_only() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;

    let status = apply(&mut client, from_yaml(FORGED_RELEASE).unwrap().remove(0))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, RELEASE_REFUSED);
    let status = get(&mut client, "Release", "api-production")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // A real release, changed by hand and written back under its own name or a new one.
    let name = server.cut_release("api");
    let Object::ComponentRelease(mut release) =
        get(&mut client, "ComponentRelease", &name).await.unwrap()
    else {
        panic!("not a ComponentRelease");
    };
    let spec = release.spec.as_mut().unwrap();
    spec.workload
        .as_mut()
        .unwrap()
        .container
        .as_mut()
        .unwrap()
        .image = "evil:latest".into();
    spec.content_hash = "0".repeat(64);
    for name in [name.as_str(), "api-1"] {
        release.metadata.as_mut().unwrap().name = name.to_string();
        release.metadata.as_mut().unwrap().resource_version = 0;
        let status = apply(&mut client, Object::ComponentRelease(release.clone()))
            .await
            .unwrap_err();
        assert_status(
            &status,
            Code::PermissionDenied,
            &format!(
                "ComponentRelease acme/{name} is written by the control plane: use `troupe release create` or ReleaseService.CreateRelease"
            ),
        );
    }
    let Object::ComponentRelease(stored) =
        get(&mut client, "ComponentRelease", &name).await.unwrap()
    else {
        panic!("not a ComponentRelease");
    };
    let stored = stored.spec.unwrap();
    assert_eq!(
        stored.workload.unwrap().container.unwrap().image,
        "ghcr.io/acme/api:1.0.0"
    );
    assert_ne!(stored.content_hash, "0".repeat(64));
    assert!(get(&mut client, "ComponentRelease", "api-1").await.is_err());

    // The binding controller's own Release stays its own: a user may read it, not delete it.
    server.bind("api", "development", &name, "");
    let rendered = eventually("the development Release is rendered", PATIENCE, || {
        server.get_json("release", "acme", "api-development")
    });
    assert_eq!(rendered["spec"]["environment"], "development");
    let status = client
        .delete(DeleteRequest {
            kind: "Release".into(),
            namespace: "acme".into(),
            name: "api-development".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "Release acme/api-development is deleted by the control plane: delete its ReleaseBinding, or set the binding's state to Undeploy",
    );
    assert!(
        server
            .get_json("release", "acme", "api-development")
            .is_some()
    );
}

#[test]
fn troupe_apply_of_a_stream_with_a_release_fails_clearly() {
    let server = Platform::builder().examples().start();
    let project = "apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: other, namespace: acme}
spec: {deploymentPipelineRef: default}
";
    let stream = format!("{project}---\n{FORGED_RELEASE}");
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&stream));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains(&format!("error: {RELEASE_REFUSED} (PermissionDenied)")),
        "{}",
        stderr(&out)
    );
    // The rest of the stream is applied; the Release is not.
    assert!(server.get_json("project", "acme", "other").is_some());
    assert!(
        server
            .get_json("release", "acme", "api-production")
            .is_none()
    );
    let out = server.cli(&["delete", "release", "api-production", "-n", "acme"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is deleted by the control plane"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_user_apply_sets_no_status() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let component = success(&server.cli(&["get", "component", "api", "-n", "acme", "-o", "yaml"]));
    let mut object = from_yaml(&component).unwrap().remove(0);
    let Object::Component(c) = &mut object else {
        panic!("not a Component")
    };
    c.status.get_or_insert_default().conditions = vec![pb::Condition {
        r#type: "Forged".into(),
        status: "True".into(),
        ..Default::default()
    }];
    c.metadata.as_mut().unwrap().resource_version = 0;
    apply(&mut client, object).await.unwrap();
    let stored = server.get_json("component", "acme", "api").unwrap();
    let conditions = stored["status"]["conditions"].as_array().cloned();
    assert!(
        !conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c["type"] == "Forged"),
        "{stored}"
    );
}

/// The DeploymentPipeline document of the example platform.
fn example_pipeline() -> String {
    let text = std::fs::read_to_string(examples_dir().join("platform.yaml")).unwrap();
    text.split("\n---\n")
        .find(|doc| doc.contains("kind: DeploymentPipeline"))
        .expect("the examples have a pipeline")
        .to_string()
}

/// The binding of `component` in `env` once its history holds `release`.
fn ran(server: &Server, env: &str, release: &str) -> Value {
    eventually(&format!("{env} has run {release}"), PATIENCE, || {
        let binding = server.get_json("rb", "acme", &format!("api-{env}"));
        check(binding, |b| {
            b.as_ref().is_some_and(|b| {
                b["status"]["releaseHistory"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|d| d["releaseName"] == release))
            })
        })
    })
    .unwrap()
}

/// Changes the workload's image from `from` to `to`.
fn set_image(server: &Server, from: &str, to: &str) {
    let out = success(&server.cli(&["get", "workload", "api", "-n", "acme", "-o", "yaml"]));
    let changed = out.replace(from, to);
    assert_ne!(changed, out, "the workload names {from}");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&changed)));
}

#[tokio::test]
async fn a_rollback_goes_only_where_the_environment_has_been() {
    let server = Platform::builder().examples().people().ungated().start();
    let mut client = server.client().await;
    // Production has run two releases, bound while its edge required nothing; then the
    // example pipeline is back, and production needs an approval from alice or bob.
    let first = server.cut_release("api");
    server.bind("api", "production", &first, "");
    ran(&server, "production", &first);
    set_image(&server, "api:1.0.0", "api:2.0.0");
    let second = server.cut_release("api");
    server.bind("api", "production", &second, "");
    ran(&server, "production", &second);
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&example_pipeline())));
    // A third release only development has seen.
    set_image(&server, "api:2.0.0", "api:3.0.0");
    let third = server.cut_release("api");
    server.bind("api", "development", &third, "");
    ran(&server, "development", &third);

    let out = server.cli(&[
        "rollback",
        "api",
        "-n",
        "acme",
        "--env",
        "production",
        "--to",
        &third,
        "--as",
        "mallory",
    ]);
    assert!(!out.status.success());
    let expected = format!(
        "Component acme/api: production never ran {third}: a rollback goes back only to a release production ran before ({second}, {first}); use `troupe promote` to bring another release to production through its approvals and gates (FailedPrecondition)"
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert_eq!(server.bound("api", "production"), second);
    let out = success(&server.cli(&["history", "api", "-n", "acme", "-o", "json"]));
    assert_eq!(out.trim(), "[]", "a refused rollback leaves no record");

    // A Promotion written by hand is no way around it either.
    let promotion = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Promotion
metadata: {{name: api-production-18446744073709551615, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  action: Rollback
  targetEnvironment: production
  releaseName: {third}
  requestedBy: alice
"
    );
    let status = apply(&mut client, from_yaml(&promotion).unwrap().remove(0))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "Promotion acme/api-production-18446744073709551615 is written by the control plane: use `troupe promote`, `troupe rollback` or PromotionService.Promote and PromotionService.Rollback",
    );
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&promotion));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is written by the control plane")
            && stderr(&out).contains("(PermissionDenied)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.bound("api", "production"), second);

    // Back to a release production ran: no approval, no gate, numbered from 1.
    let out = success(&server.cli(&[
        "rollback",
        "api",
        "-n",
        "acme",
        "--env",
        "production",
        "--to",
        &first,
        "--as",
        "mallory",
    ]));
    assert!(
        out.starts_with(&format!(
            "promotion/api-production-1: Succeeded: production runs {first} (was {second})"
        )),
        "{out}"
    );
    assert_eq!(server.bound("api", "production"), first);
}

#[tokio::test]
async fn a_template_that_names_no_object_is_refused_when_written() {
    let server = Platform::builder().examples().start();
    let mut client = server.client().await;
    let component_type = "apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: hollow, namespace: acme}
spec:
  workloadType: deployment
  resources:
    - id: deployment
      template: {}
";
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(component_type));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "ComponentType acme/hollow: spec.resources[0].template.apiVersion: required: the template of resource \"deployment\" is empty (a string, or a ${{ }} expression) (InvalidArgument)"
        ),
        "{}",
        stderr(&out)
    );
    assert!(server.get_json("ct", "acme", "hollow").is_none());

    // What a generated client sends for a template it never filled in: an empty Struct.
    let mut object = from_yaml(component_type).unwrap().remove(0);
    let Object::ComponentType(t) = &mut object else {
        panic!("not a ComponentType")
    };
    t.spec.as_mut().unwrap().resources[0].template = Some(pbjson_types::Struct::default());
    let status = apply(&mut client, object).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(
            "ComponentType acme/hollow: spec.resources[0].template.apiVersion: required"
        ),
        "{status:?}"
    );

    let kindless = "apiVersion: troupe.dev/v1alpha1
kind: Trait
metadata: {name: volume, namespace: acme}
spec:
  creates:
    - template: {apiVersion: v1, metadata: {name: data}}
";
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(kindless));
    assert!(
        stderr(&out).contains("Trait acme/volume: spec.creates[0].template.kind: required"),
        "{}",
        stderr(&out)
    );
    // Expressions may name the object.
    let expressed = kindless.replace(
        "apiVersion: v1,",
        "apiVersion: v1, kind: \"${{ parameters.kind }}\",",
    );
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&expressed)));
}

/// ReleaseBinding `api-ENV` in acme pointing at `release`, with `extra` spec lines.
fn binding_yaml(env: &str, release: &str, extra: &str) -> String {
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {{name: api-{env}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  environment: {env}
  releaseName: {release}
{extra}"
    )
}

/// Why a user's apply may not point production's binding at a release: `change` is what it
/// tried (`be set to R`, `change from A to B`).
fn bypass_refused(change: &str) -> String {
    format!(
        "ReleaseBinding acme/api-production: spec.releaseName: cannot {change} by an apply: production gets its releases through pipeline default's edge staging → production, which requires an approval and the gate healthy-in-staging; use `troupe promote api -n acme --to production`, or `troupe rollback api -n acme --env production` to go back to a release production ran"
    )
}

/// The replicas of the Deployment in Release `api-ENV`, once it exists.
fn replicas(server: &Server, env: &str) -> Option<i64> {
    let release = server.get_json("release", "acme", &format!("api-{env}"))?;
    release["spec"]["resources"]
        .as_array()?
        .iter()
        .map(|r| &r["object"])
        .find(|o| o["kind"] == "Deployment")?["spec"]["replicas"]
        .as_i64()
}

#[tokio::test]
async fn a_binding_applied_directly_cannot_skip_the_pipelines_approvals_and_gates() {
    let server = Platform::builder()
        .examples()
        .people()
        .agent("acme/local", "a")
        .start();
    let mut client = server.client().await;
    let first = server.cut_release("api");
    // Development is where releases arrive; development → staging has no approval and no
    // gate: a binding applied directly bypasses nothing there.
    server.bind("api", "development", &first, "");
    server.bind("api", "staging", &first, "");
    assert_eq!(server.bound("api", "staging"), first);

    // staging → production needs an approval and a healthy staging: an apply goes around both.
    let production = from_yaml(&binding_yaml("production", &first, ""))
        .unwrap()
        .remove(0);
    let status = apply(&mut client, production).await.unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        &bypass_refused(&format!("be set to {first}")),
    );
    let out = server.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&binding_yaml("production", &first, "")),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "error: {} (PermissionDenied)",
            bypass_refused(&format!("be set to {first}"))
        )),
        "{}",
        stderr(&out)
    );
    assert!(server.get_json("rb", "acme", "api-production").is_none());
    assert!(
        server
            .get_json("release", "acme", "api-production")
            .is_none()
    );

    // The approved path still works.
    eventually("staging is ready", PATIENCE, || {
        server.ready("api", "staging")
    });
    let out = success(&server.cli(&[
        "promote",
        "api",
        "-n",
        "acme",
        "--to",
        "production",
        "--as",
        "carol",
    ]));
    assert!(
        out.contains("Pending: waiting for 1 more approval"),
        "{out}"
    );
    let name = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("promotion/"))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    let out = success(&server.cli(&["approve", &name, "-n", "acme", "--as", "alice"]));
    assert!(out.contains(": Succeeded: production runs"), "{out}");
    assert_eq!(server.bound("api", "production"), first);

    // Its overrides and its state stay the user's to change.
    let replicas_3 = "  componentTypeEnvironmentConfigs: {replicas: 3}\n";
    success(&server.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&binding_yaml("production", &first, replicas_3)),
    ));
    eventually("production runs 3 replicas", PATIENCE, || {
        replicas(&server, "production") == Some(3)
    });

    // Its release is not.
    set_image(&server, "api:1.0.0", "api:2.0.0");
    let second = server.cut_release("api");
    let changed = from_yaml(&binding_yaml("production", &second, replicas_3))
        .unwrap()
        .remove(0);
    let status = apply(&mut client, changed).await.unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        &bypass_refused(&format!("change from {first} to {second}")),
    );
    assert_eq!(server.bound("api", "production"), first);
    let undeploy = format!("{replicas_3}  state: Undeploy\n");
    success(&server.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&binding_yaml("production", &first, &undeploy)),
    ));
    eventually("production is undeployed", PATIENCE, || {
        server
            .get_json("release", "acme", "api-production")
            .is_none()
    });
    assert_eq!(server.bound("api", "production"), first);
}
