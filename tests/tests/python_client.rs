//! A client generated from `proto/` in Python (grpcio-tools) applies the examples and reads
//! them back: other languages can use the API with nothing but the proto files.

use std::process::Command;

use troupe_tests::{Platform, python_bin, success, workspace_root};

#[test]
fn generated_python_client_applies_and_reads_the_examples() {
    let server = Platform::builder().start();
    let root = workspace_root();
    let out = Command::new(python_bin())
        .current_dir(&root)
        .args(["tests/python/client_test.py", "--server", &server.addr])
        .args(["--proto", "proto", "--examples", "examples/platform.yaml"])
        .output()
        .expect("running python");
    let text = success(&out);
    assert!(
        text.contains("python client: ") && text.contains(" passed, 0 failed"),
        "{text}"
    );
}
