//! Mistakes that only show when a component renders, through the real server and CLI: each
//! fails the render with a message naming where (type or trait, entry, field, expression)
//! and what, and nothing is stored.

use troupe_tests::{Platform, Server, stderr, success};

/// Applies `kind NAME` back after `edit` changes its YAML.
fn edit(server: &Server, kind: &str, name: &str, edit: impl Fn(&str) -> String) {
    let yaml = success(&server.cli(&["get", kind, name, "-n", "acme", "-o", "yaml"]));
    let edited = edit(&yaml);
    assert_ne!(yaml, edited, "the edit must change something");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
}

/// Renders api in development with `args`; returns the error text, asserting it failed.
fn render_error(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["render", "api", "-n", "acme", "--env", "development"];
    all.extend_from_slice(args);
    let out = server.cli(&all);
    assert!(
        !out.status.success(),
        "the render should fail: {}",
        troupe_tests::stdout(&out)
    );
    stderr(&out)
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn expression_errors_name_the_template_field_and_expression() {
    let server = Platform::builder().examples().start();

    // An undefined variable.
    edit(&server, "ct", "service", |y| {
        y.replace(
            "${{ environmentConfigs.replicas }}",
            "${{ environmentConfigs.replica_count }}",
        )
    });
    let err = render_error(&server, &[]);
    assert_mentions(
        &err,
        &[
            "ComponentType resources[deployment]",
            "/spec/replicas",
            "`environmentConfigs.replica_count`",
            "undefined",
        ],
    );

    // A value of the wrong type.
    edit(&server, "ct", "service", |y| {
        y.replace(
            "${{ environmentConfigs.replica_count }}",
            "${{ environmentConfigs.replicas + 'x' }}",
        )
    });
    let err = render_error(&server, &[]);
    assert_mentions(
        &err,
        &[
            "ComponentType resources[deployment]",
            "`environmentConfigs.replicas + 'x'`",
            "invalid operation",
        ],
    );

    // A runaway expression stops at the fuel bound instead of stalling the server.
    edit(&server, "ct", "service", |y| {
        y.replace(
            "${{ environmentConfigs.replicas + 'x' }}",
            "${{ environmentConfigs.replicas }}",
        )
    });
    edit(&server, "trait", "ingress", |y| {
        y.replace(
            "${{ parameters.path }}",
            "${{ range(10000) | map('string') | join(range(10000) | join) }}",
        )
    });
    let err = render_error(&server, &["--set", "replicas=1"]);
    assert_mentions(
        &err,
        &["trait public (ingress) creates[ingress]", "ran out of fuel"],
    );
    // The server is still there and fine.
    success(&server.cli(&["get", "ct", "-n", "acme"]));
}

#[test]
fn output_rules_check_each_rendered_object_they_target() {
    let server = Platform::builder().examples().start();
    edit(&server, "ct", "service", |y| {
        y.replace(
            "  validations:\n",
            "  outputValidations:
  - target: {group: apps, version: v1, kind: Deployment}
    rule: ${{ object.spec.replicas <= 3 }}
    message: a service runs at most 3 replicas
  - rule: ${{ object.metadata.namespace == metadata.namespace }}
    message: everything goes to the component's namespace
  validations:\n",
        )
    });
    success(&server.cli(&[
        "render",
        "api",
        "-n",
        "acme",
        "--env",
        "development",
        "--set",
        "replicas=3",
    ]));
    let err = render_error(&server, &["--set", "replicas=5"]);
    assert_mentions(
        &err,
        &[
            "ComponentType outputValidations[0] on Deployment/api",
            "a service runs at most 3 replicas",
        ],
    );

    // An untargeted rule sees every object, including what traits create.
    edit(&server, "trait", "ingress", |y| {
        y.replace(
            "namespace: ${{ metadata.namespace }}",
            "namespace: elsewhere",
        )
    });
    let err = render_error(&server, &[]);
    assert_mentions(
        &err,
        &[
            "outputValidations[1] on Ingress/api-public",
            "everything goes to the component's namespace",
        ],
    );

    // A rule that does not compile is refused when the type is written.
    let yaml = success(&server.cli(&["get", "ct", "service", "-n", "acme", "-o", "yaml"]));
    let bad = yaml.replace("${{ object.spec.replicas <= 3 }}", "${{ object.spec.( }}");
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&bad));
    assert!(!out.status.success());
    assert_mentions(&stderr(&out), &["spec.outputValidations[0].rule"]);
}

#[test]
fn required_patches_must_change_something() {
    let server = Platform::builder().examples().start();
    let patches = |required: bool, kind: &str, path: &str| {
        format!(
            "  patches:
  - target:
      group: apps
      version: v1
      kind: {kind}
      where: ${{{{ object.metadata.name == metadata.componentName }}}}
    required: {required}
    operations:
    - {{op: replace, path: \"{path}\", value: busybox}}
  creates:\n"
        )
    };
    let sidecar = "/spec/template/spec/containers/[?(@.name=='sidecar')]/image";
    let main = "/spec/template/spec/containers/[?(@.name=='main')]/image";

    // Not required: a selector that matches nothing changes nothing, silently.
    edit(&server, "trait", "ingress", |y| {
        y.replace("  creates:\n", &patches(false, "Deployment", sidecar))
    });
    success(&server.cli(&["render", "api", "-n", "acme", "--env", "development"]));

    // Required: the same patch fails, naming the path and the object.
    edit(&server, "trait", "ingress", |y| {
        y.replace("  - operations:", "  - required: true\n    operations:")
    });
    let err = render_error(&server, &[]);
    assert_mentions(
        &err,
        &[
            "trait public (ingress) patches[0] operations[0]",
            "required patch",
            sidecar,
            "matches nothing in Deployment/api",
        ],
    );

    // Required, and the target selects no object at all.
    edit(&server, "trait", "ingress", |y| {
        y.replace("kind: Deployment", "kind: StatefulSet")
    });
    let err = render_error(&server, &[]);
    assert_mentions(
        &err,
        &[
            "trait public (ingress) patches[0]",
            "no rendered object is a apps/v1 StatefulSet where",
        ],
    );

    // Required and matching: the main container's image is replaced.
    edit(&server, "trait", "ingress", |y| {
        y.replace("kind: StatefulSet", "kind: Deployment")
            .replace(sidecar, main)
    });
    let out = success(&server.cli(&["render", "api", "-n", "acme", "--env", "development"]));
    assert!(out.contains("image: busybox"), "{out}");
}

#[test]
fn trait_instance_names_are_unique_across_the_type_and_the_component() {
    let server = Platform::builder().examples().start();
    edit(&server, "ct", "service", |y| {
        y.replace(
            "  validations:\n",
            "  traits:
  - name: ingress
    instanceName: public
    parameters: {host: internal.acme.example.com}
  validations:\n",
        )
    });
    let yaml = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(!out.status.success());
    assert_mentions(
        &stderr(&out),
        &[
            "spec.traits[0].instanceName",
            "\"public\" is already the name of a trait instance embedded in ComponentType acme/service",
        ],
    );
}
