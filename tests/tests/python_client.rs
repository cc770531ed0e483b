//! A client generated from `proto/` in Python (grpcio-tools) applies the examples and reads
//! them back over TLS with the admin token: other languages can use the API with nothing but
//! the proto files, the server's CA and a token.

use std::process::Command;

use troupe_tests::{Platform, python_bin, success, workspace_root};

#[test]
fn generated_python_client_applies_and_reads_the_examples() {
    let server = Platform::builder().start();
    let root = workspace_root();
    let mut command = Command::new(python_bin());
    command
        .current_dir(&root)
        .args(["tests/python/client_test.py", "--server", &server.addr])
        .arg("--ca")
        .arg(server.ca_path())
        .args(["--proto", "proto", "--examples", "examples/platform.yaml"]);
    if let Some(token) = server.admin_token() {
        command.env("TROUPE_TOKEN", token);
    }
    let out = command.output().expect("running python");
    let text = success(&out);
    assert!(
        text.contains("python client: ") && text.contains(" passed, 0 failed"),
        "{text}"
    );
}
