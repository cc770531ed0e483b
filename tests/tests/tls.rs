//! The API endpoint speaks TLS with a certificate the server's own CA signs; plain gRPC is
//! for loopback unless made insecure on purpose; and the CLI keeps servers, CAs and tokens as
//! contexts (`troupe login`, `troupe server --dev`) so later verbs need no flags.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use troupe_tests::{PATIENCE, Platform, eventually, stderr, stdout, success, troupe_bin};

const HEALTH: &str = "grpc.health.v1.Health/Check";

/// `troupe ARGS` with only `config` as its configuration: no server, CA, token or context
/// from the environment.
fn troupe_with_config(config: &Path, args: &[&str]) -> Output {
    Command::new(troupe_bin())
        .args(args)
        .env("TROUPE_CONFIG", config)
        .env_remove("TROUPE_SERVER")
        .env_remove("TROUPE_CA")
        .env_remove("TROUPE_TOKEN")
        .env_remove("TROUPE_CONTEXT")
        .env_remove("TROUPE_NAMESPACE")
        .output()
        .expect("running troupe")
}

#[test]
fn plaintext_off_loopback_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(troupe_bin())
        .args(["server", "--listen", "0.0.0.0:0", "--plaintext"])
        .args(["--agent-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually(
        "the server refuses to start",
        Duration::from_secs(10),
        || child.try_wait().unwrap().ok_or("still running"),
    );
    let out = child.wait_with_output().unwrap();
    assert!(!status.success(), "stdout:\n{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refusing to serve the API in plaintext on 0.0.0.0:0")
            && err.contains("--insecure"),
        "{err}"
    );

    let server = Platform::builder()
        .args(&["--listen", "0.0.0.0:0", "--plaintext", "--insecure"])
        .examples()
        .start();
    assert!(
        server.announced.ends_with("(plaintext)"),
        "{}",
        server.announced
    );
    let health = success(&server.grpcurl(&[&server.addr, HEALTH]));
    assert!(health.contains("SERVING"), "{health}");
    let listed = success(&server.cli(&["get", "components", "-n", "acme"]));
    assert!(listed.contains("api"), "{listed}");
}

#[test]
fn the_api_speaks_tls_with_the_servers_ca() {
    let server = Platform::builder().examples().start();
    let ca = server.ca_path();
    assert_eq!(
        server.announced,
        format!(
            "troupe server listening on {} (TLS, CA {})",
            server.addr,
            ca.display()
        )
    );
    let health = success(&server.grpcurl(&[&server.addr, HEALTH]));
    assert!(health.contains("SERVING"), "{health}");

    // The certificate is valid for localhost too.
    let port = server.addr.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port}");
    let health = success(&server.grpcurl(&[&by_name, HEALTH]));
    assert!(health.contains("SERVING"), "{health}");

    // Plain gRPC gets no answer; TLS without the CA does not trust the server.
    let grpcurl = troupe_tests::grpcurl_bin();
    let plain = Command::new(&grpcurl)
        .args(["-plaintext", "-max-time", "5", &server.addr, HEALTH])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{}", stdout(&plain));
    let untrusted = Command::new(&grpcurl)
        .args(["-max-time", "5", &server.addr, HEALTH])
        .output()
        .unwrap();
    assert!(!untrusted.status.success(), "{}", stdout(&untrusted));
    assert!(
        stderr(&untrusted).contains("certificate signed by unknown authority"),
        "{}",
        stderr(&untrusted)
    );

    // The CLI trusts only the CA it is given.
    let config = server.config_path();
    let url = server.url();
    let out = troupe_with_config(&config, &["--server", &url, "get", "comp", "-n", "acme"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach the Troupe server at {url}"))
            && stderr(&out).contains("--ca"),
        "{}",
        stderr(&out)
    );
    let ca = ca.to_str().unwrap();
    let token = server.admin_token().expect("the admin token");
    let out = troupe_with_config(
        &config,
        &[
            "--server", &url, "--ca", ca, "--token", &token, "get", "comp", "-n", "acme",
        ],
    );
    assert!(success(&out).contains("api"));
}

#[test]
fn the_operators_certificate_replaces_the_servers_own() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("operator-ca.pem"),
        dir.path().join("api.pem"),
        dir.path().join("api.key"),
    );
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let server = Platform::builder()
        .args(&[
            "--api-tls-cert",
            cert_path.to_str().unwrap(),
            "--api-tls-key",
            key_path.to_str().unwrap(),
        ])
        .start();
    assert!(
        server
            .announced
            .ends_with(&format!("(TLS, certificate {})", cert_path.display())),
        "{}",
        server.announced
    );
    let grpcurl = |ca: &Path| {
        Command::new(troupe_tests::grpcurl_bin())
            .arg("-cacert")
            .arg(ca)
            .args(["-max-time", "5", &server.addr, HEALTH])
            .output()
            .unwrap()
    };
    assert!(success(&grpcurl(&ca_path)).contains("SERVING"));
    // The server's own CA no longer vouches for the API (it still does for agents).
    let own = grpcurl(&server.ca_path());
    assert!(!own.status.success(), "{}", stdout(&own));
    let config = server.config_path();
    let url = server.url();
    let ca = ca_path.to_str().unwrap();
    let token = server.admin_token().expect("the admin token");
    let out = troupe_with_config(
        &config,
        &["--server", &url, "--ca", ca, "--token", &token, "get", "ns"],
    );
    success(&out);
}

#[test]
fn login_writes_a_context_that_later_verbs_use() {
    let server = Platform::builder().examples().start();
    let config = server.config_path();
    let ca = server.ca_path();
    let token = server.admin_token().expect("the admin token");
    let url = server.url();

    // A server the CLI cannot trust is not saved.
    let out = troupe_with_config(&config, &["login", "--server", &url, "--token", &token]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        !config.exists(),
        "a failed login wrote {}",
        config.display()
    );

    // A token the server does not know is refused, and nothing is written.
    let refused = troupe_with_config(
        &config,
        &[
            "login",
            "--server",
            &url,
            "--ca",
            ca.to_str().unwrap(),
            "--token",
            "trp_0000",
        ],
    );
    assert!(
        !refused.status.success() && stderr(&refused).contains("unknown API token"),
        "{}",
        stderr(&refused)
    );
    assert!(!config.exists(), "a refused login writes no context");

    let out = success(&troupe_with_config(
        &config,
        &[
            "login",
            "--server",
            &url,
            "--ca",
            ca.to_str().unwrap(),
            "--token",
            &token,
            "--context",
            "test",
        ],
    ));
    assert_eq!(
        out.trim(),
        format!("logged in to {url} as admin: context test is current")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the config holds tokens");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("BEGIN CERTIFICATE") && text.contains(&token),
        "{text}"
    );

    // No flag and no variable: the current context says where and how.
    let listed = success(&troupe_with_config(
        &config,
        &["get", "components", "-n", "acme"],
    ));
    assert!(listed.contains("api"), "{listed}");
    let contexts = success(&troupe_with_config(&config, &["context", "list"]));
    assert!(
        contexts
            .lines()
            .any(|l| l.starts_with('*') && l.contains("test") && l.contains(&url)),
        "{contexts}"
    );

    let out = troupe_with_config(&config, &["context", "use", "nope"]);
    assert!(
        stderr(&out).contains("no context \"nope\""),
        "{}",
        stderr(&out)
    );
    success(&troupe_with_config(&config, &["logout"]));
    let contexts = success(&troupe_with_config(&config, &["context", "list"]));
    assert!(!contexts.contains("test"), "{contexts}");
}

#[test]
fn dev_mode_writes_the_context_client_verbs_use() {
    let server = Platform::builder().dev().start();
    let config = server.config_path();
    eventually("dev mode writes the CLI context", PATIENCE, || {
        std::fs::read_to_string(&config)
            .ok()
            .filter(|t| t.contains("current-context: dev"))
            .ok_or("no context yet")
    });
    let listed = success(&troupe_with_config(
        &config,
        &["get", "components", "-n", "acme"],
    ));
    assert!(listed.contains("api"), "{listed}");
    let contexts = success(&troupe_with_config(&config, &["context", "list"]));
    assert!(contexts.contains(&server.url()), "{contexts}");
}
