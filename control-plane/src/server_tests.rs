//! Unit tests of the server's configuration checks.

use super::*;

fn mk_config(listen: &str, api_transport: ApiTransport) -> ServerConfig {
    let mut config = ServerConfig::local(None);
    config.listen = listen.parse().unwrap();
    config.api_transport = api_transport;
    config
}

#[test]
fn plaintext_is_for_loopback_unless_insecure() {
    let plain = ApiTransport::Plaintext { insecure: false };
    assert!(
        mk_config("127.0.0.1:0", plain.clone())
            .check_transport()
            .is_ok()
    );
    assert!(
        mk_config("[::1]:0", plain.clone())
            .check_transport()
            .is_ok()
    );
    let err = mk_config("0.0.0.0:50051", plain)
        .check_transport()
        .unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("0.0.0.0:50051") && err.contains("--insecure"),
        "{err}"
    );
    let insecure = ApiTransport::Plaintext { insecure: true };
    assert!(mk_config("0.0.0.0:0", insecure).check_transport().is_ok());
    assert!(
        mk_config("0.0.0.0:0", ApiTransport::OwnCa)
            .check_transport()
            .is_ok()
    );
}

#[test]
fn the_certificate_covers_agent_and_api_names_once() {
    let mut config = ServerConfig::local(None);
    config.agent_names.push("agents.example".into());
    config.api_names.push("api.example".into());
    assert_eq!(
        config.server_names(),
        ["localhost", "127.0.0.1", "agents.example", "api.example"]
    );
}

/// Without the `etcd` feature, `--store etcd://…` is refused saying how to build with it.
#[cfg(not(feature = "etcd"))]
#[test]
fn an_etcd_store_needs_a_build_with_the_etcd_feature() {
    let mut config = ServerConfig::local(None);
    config.store = "etcd://127.0.0.1:2379/troupe".parse().unwrap();
    let err = open::store(&config)
        .err()
        .expect("no etcd support in this build")
        .to_string();
    assert!(
        err.contains("--features troupe-control-plane/etcd"),
        "{err}"
    );
    assert!(err.contains("etcd://127.0.0.1:2379/troupe"), "{err}");
}
