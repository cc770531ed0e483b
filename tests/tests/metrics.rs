//! The Prometheus endpoints an operator scrapes: `troupe server --metrics-addr` and the
//! agent's `--health-addr`, read over real HTTP and parsed as Prometheus reads them.
//!
//! Each test makes something happen that an operator would want to see (a call that works, a
//! call for a missing object, a release rendered and applied, an agent that connects and goes
//! away) and checks that the figures for exactly that moved.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use troupe_common::pb::v1alpha1::GetRequest;
use troupe_tests::{PATIENCE, Platform, eventually, success};

/// One sample of the text format: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample of a scrape, as the Prometheus text format 0.0.4 writes them.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("not a sample: {l:?}")))
            .collect();
        Scrape(samples)
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.0.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        });
        let sample = found.next()?;
        assert!(
            found.next().is_none(),
            "{name} {labels:?} names more than one sample"
        );
        Some(sample.value)
    }

    /// Like [`Scrape::value`], with 0 for a sample not written yet (a counter not yet moved).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

/// `name{k="v",…} value`, with `\"` and `\\` escapes in label values.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        while !rest.starts_with('}') {
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => value.push(chars.next()?.1),
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_string(), value);
            rest = after[end + 1..].trim_start_matches(',');
        }
        rest = &rest[1..];
    }
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `GET /metrics` on `addr`, checked for status 200 and the Prometheus content type, parsed.
fn scrape(addr: SocketAddr) -> Result<Scrape, String> {
    let response = troupe_tests::http::get(addr, "/metrics")?;
    if response.code != 200 {
        return Err(response.head);
    }
    if !response
        .head
        .contains("content-type: text/plain; version=0.0.4")
    {
        return Err(format!("not the Prometheus text format: {}", response.head));
    }
    Ok(Scrape::parse(&response.body))
}

/// Waits until a scrape of `addr` satisfies `check`, and returns it.
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&Scrape) -> Result<(), String>,
) -> Scrape {
    eventually(what, PATIENCE, || {
        let scrape = scrape(addr)?;
        check(&scrape)?;
        Ok::<_, String>(scrape)
    })
}

/// Ok when `seen` is `want`, else what was seen.
fn is(what: &str, seen: Option<f64>, want: f64) -> Result<(), String> {
    if seen == Some(want) {
        Ok(())
    } else {
        Err(format!("{what}: {seen:?}, want {want}"))
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

const SERVICE: &str = "troupe.v1alpha1.ResourceService";

fn get_labels(code: &'static str) -> [(&'static str, &'static str); 3] {
    [("service", SERVICE), ("method", "Get"), ("code", code)]
}

#[test]
fn the_control_plane_counts_calls_by_code_renders_controllers_and_agents() {
    let metrics = free_addr();
    let mut platform = Platform::builder()
        .examples()
        .ungated()
        .args(&["--metrics-addr", &metrics.to_string()])
        .start();
    let before = scrape(metrics).expect("the metrics endpoint answers");
    assert_eq!(
        before.value(
            "troupe_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(before.value("process_start_time_seconds", &[]).unwrap() > 1.7e9);
    assert_eq!(before.value("troupe_agents_connected", &[]), Some(0.0));
    assert_eq!(
        before.value("troupe_grpc_server_calls_open", &[]),
        Some(0.0)
    );

    // One call that works and one for an object that does not exist.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let get = |name: &str| GetRequest {
        kind: "Environment".into(),
        namespace: "acme".into(),
        name: name.into(),
    };
    let (found, missing) = runtime.block_on(async {
        let mut client = platform.client().await;
        let found = client.get(get("development")).await;
        (found, client.get(get("nowhere")).await)
    });
    assert!(found.is_ok(), "{found:?}");
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

    let after = scrape(metrics).unwrap();
    let handled = "troupe_grpc_server_handled_total";
    let moved =
        |code| after.count(handled, &get_labels(code)) - before.count(handled, &get_labels(code));
    assert_eq!(moved("NOT_FOUND"), 1.0, "{after:?}");
    assert_eq!(moved("OK"), 1.0);
    let route = [("service", SERVICE), ("method", "Get")];
    let calls = after.value("troupe_grpc_server_handling_seconds_count", &route);
    let under_inf = [route[0], route[1], ("le", "+Inf")];
    assert!(calls.unwrap() >= 2.0, "{calls:?}");
    assert_eq!(
        after.value("troupe_grpc_server_handling_seconds_bucket", &under_inf),
        calls,
        "every call falls in the +Inf bucket"
    );
    assert!(
        after
            .value("troupe_grpc_server_handling_seconds_sum", &route)
            .unwrap()
            > 0.0
    );
    // The applies of the setup were committed and flushed.
    assert!(
        after
            .value("troupe_store_commit_duration_seconds_count", &[])
            .unwrap()
            > 0.0
    );
    assert!(
        after
            .value("troupe_store_flush_duration_seconds_count", &[])
            .unwrap()
            > 0.0
    );

    // A release bound: rendered by the binding controller, applied by a connected agent.
    let agent = platform.register_agent("acme/local", "a");
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    let plane = [("dataplane", "acme/local")];
    let in_sync = [plane[0], ("state", "in_sync")];
    let synced = scrape_until(metrics, "the agent is connected and in sync", |s| {
        is(
            "agents connected",
            s.value("troupe_agents_connected", &[]),
            1.0,
        )?;
        is(
            "agent of acme/local",
            s.value("troupe_dataplane_agent_connected", &plane),
            1.0,
        )?;
        is(
            "in sync",
            s.value("troupe_dataplane_releases", &in_sync),
            1.0,
        )?;
        is(
            "the agent's stream open",
            s.value("troupe_grpc_server_calls_open", &[]),
            1.0,
        )
    });
    let pending = [plane[0], ("state", "pending")];
    assert_eq!(
        synced.value("troupe_dataplane_releases", &pending),
        Some(0.0)
    );
    let failed = [plane[0], ("state", "failed")];
    assert_eq!(
        synced.value("troupe_dataplane_releases", &failed),
        Some(0.0)
    );
    let rendered = synced.value("troupe_render_duration_seconds_count", &[("outcome", "ok")]);
    assert!(rendered.unwrap() >= 1.0, "{rendered:?}");
    let binding = [("controller", "binding")];
    let reconciles = synced.value("troupe_controller_reconciles_total", &binding);
    assert!(reconciles.unwrap() >= 1.0, "{reconciles:?}");
    assert!(
        synced
            .value("troupe_controller_reconcile_seconds_total", &binding)
            .unwrap()
            > 0.0
    );
    for controller in ["binding", "deploy", "promotion", "status"] {
        let labels = [("controller", controller)];
        let depth = synced.value("troupe_controller_queue_depth", &labels);
        assert!(depth.is_some_and(|d| d >= 0.0), "{controller}: {depth:?}");
        assert!(
            synced
                .value("troupe_controller_reconcile_failures_total", &labels)
                .is_some()
        );
        assert!(
            synced
                .value("troupe_controller_retries_pending", &labels)
                .is_some()
        );
    }

    agent.kill();
    scrape_until(metrics, "the agent's departure is seen", |s| {
        is(
            "agents connected",
            s.value("troupe_agents_connected", &[]),
            0.0,
        )?;
        is(
            "agent of acme/local",
            s.value("troupe_dataplane_agent_connected", &plane),
            0.0,
        )?;
        is(
            "calls open",
            s.value("troupe_grpc_server_calls_open", &[]),
            0.0,
        )
    });
    platform.kill_server();
}

#[test]
fn the_agent_counts_applies_releases_held_and_sessions() {
    let mut platform = Platform::builder().examples().ungated().start();
    let health = free_addr();
    let _agent =
        platform.register_agent_with("acme/local", "a", &["--health-addr", &health.to_string()]);
    let connected = scrape_until(health, "the agent has synced", |s| {
        is("connected", s.value("troupe_agent_connected", &[]), 1.0)
    });
    assert_eq!(
        connected.value(
            "troupe_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        connected.value("troupe_agent_session_connects_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        connected.value("troupe_agent_releases_held", &[]),
        Some(0.0)
    );

    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    platform.bind("api", "staging", &release, "");
    // Acks follow the applies: wait for both.
    let applied = scrape_until(health, "both releases are applied and acknowledged", |s| {
        is("held", s.value("troupe_agent_releases_held", &[]), 2.0)?;
        match s.count("troupe_agent_acks_total", &[]) {
            acks if acks >= 2.0 => Ok(()),
            acks => Err(format!("acks: {acks}, want at least 2")),
        }
    });
    let apply = [("op", "apply")];
    let applies = applied.value("troupe_agent_apply_duration_seconds_count", &apply);
    assert!(applies.unwrap() >= 2.0, "{applies:?}");
    assert_eq!(
        applied.value("troupe_agent_retries_pending", &[]),
        Some(0.0)
    );
    assert_eq!(
        applied.count("troupe_agent_apply_failures_total", &[("op", "apply")]),
        0.0
    );

    // Unbound: the agent prunes it and holds one release.
    success(&platform.cli(&["delete", "releasebinding", "api-staging", "-n", "acme"]));
    let pruned = scrape_until(health, "the unbound release is pruned", |s| {
        is("held", s.value("troupe_agent_releases_held", &[]), 1.0)
    });
    let prunes = pruned.value(
        "troupe_agent_apply_duration_seconds_count",
        &[("op", "prune")],
    );
    assert!(prunes.unwrap() >= 1.0, "{prunes:?}");

    // The control plane goes away: the session ends, and counts as a disconnect.
    platform.kill_server();
    scrape_until(health, "the agent saw its session end", |s| {
        is("connected", s.value("troupe_agent_connected", &[]), 0.0)?;
        is(
            "disconnects",
            s.value("troupe_agent_session_disconnects_total", &[]),
            1.0,
        )
    });
}

#[test]
fn samples_are_parsed_with_their_labels() {
    let line = r#"m_total{a="x",b="q\"uote",le="+Inf"} 3"#;
    let sample = parse_sample(line).unwrap();
    assert_eq!(sample.name, "m_total");
    assert_eq!(sample.labels["b"], "q\"uote");
    assert_eq!(sample.labels["le"], "+Inf");
    assert_eq!(sample.value, 3.0);
    assert_eq!(parse_sample("up 1").unwrap().value, 1.0);
    assert_eq!(parse_sample("x{} +Inf").unwrap().value, f64::INFINITY);
    assert_eq!(parse_sample("nothing"), None);
}
