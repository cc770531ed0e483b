//! One budget per render, through the real server and CLI: a component whose type builds
//! many pieces, each small, fails its render as a whole with the budget named, instead of
//! building them all; a binding to it fails alone and does not stop the server starting.

use troupe_tests::{PATIENCE, Platform, Server, check, eventually, stderr, success};

/// `count` ConfigMaps of a `bytes`-long string each, as resources of the `service`
/// ComponentType (in `troupe get -o yaml` layout). Each is well under the output budget.
fn blob_resources(count: usize, bytes: usize) -> String {
    let mut yaml = String::from("  resources:\n");
    for i in 0..count {
        yaml.push_str(&format!(
            "  - id: blob{i}
    template:
      apiVersion: v1
      kind: ConfigMap
      metadata: {{name: 'blob{i}'}}
      data: {{blob: \"${{{{ 'x' * {bytes} }}}}\"}}
"
        ));
    }
    yaml
}

/// Adds `resources` to the `service` ComponentType.
fn add_resources(server: &Server, resources: &str) {
    let yaml = success(&server.cli(&["get", "ct", "service", "-n", "acme", "-o", "yaml"]));
    let edited = yaml.replace("  resources:\n", resources);
    assert_ne!(yaml, edited, "the type has resources");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
}

/// `troupe render api` in development: the error text, asserting it failed.
fn render_error(server: &Server) -> String {
    let out = server.cli(&["render", "api", "-n", "acme", "--env", "development"]);
    assert!(!out.status.success(), "the render should fail");
    stderr(&out)
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

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn many_entries_each_under_the_budget_fail_the_render_together() {
    // Twelve 1 MB strings: each fits a render, together they pass its 8 MiB.
    let mut platform = Platform::builder().examples().start();
    add_resources(&platform, &blob_resources(12, 1_000_000));
    let over = [
        "ComponentType resources[blob",
        "`'x' * 1000000`",
        "the render's output exceeds 8 MiB (--render-max-bytes)",
    ];
    assert_mentions(&render_error(&platform), &over);

    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    let (reason, message) = render_failure(&platform, "api-development");
    assert_eq!(reason, "RenderFailed");
    assert_mentions(&message, &over);
    assert_eq!(
        platform.get_json("release", "acme", "api-development"),
        None
    );

    // Every binding renders again at start: the server comes up and says the same.
    platform.restart_server();
    success(&platform.cli(&["get", "ct", "-n", "acme"]));
    let (reason, message) = render_failure(&platform, "api-development");
    assert_eq!(reason, "RenderFailed");
    assert_mentions(&message, &over);
}

#[test]
fn the_server_flags_set_the_budget() {
    let platform = Platform::builder()
        .args(&[
            "--render-max-bytes",
            "1048576",
            "--render-max-objects",
            "20",
        ])
        .examples()
        .start();
    // Twelve 100 KB strings pass 1 MiB at the eleventh.
    add_resources(&platform, &blob_resources(12, 100_000));
    assert_mentions(
        &render_error(&platform),
        &[
            "ComponentType resources[blob10]",
            "the render's output exceeds 1 MiB (--render-max-bytes)",
        ],
    );
    // Twenty-five tiny ones, rendered first, pass 20 objects at the twenty-first.
    add_resources(&platform, &blob_resources(25, 1).replace("blob", "tiny"));
    assert_mentions(
        &render_error(&platform),
        &[
            "ComponentType resources[tiny20]",
            "the render makes more than 20 objects (--render-max-objects)",
        ],
    );
}
