//! Who may do what on the API, as users of every client see it: one platform with two
//! projects in namespace acme (shop with component api from the examples, billing with
//! component ledger), API tokens for each built-in role, and the same questions asked through
//! grpcurl, a generated Python client, a generated Node client and the `troupe` CLI. Each
//! answer is OK or PERMISSION_DENIED as the role says, and a denial names the verb, the kind
//! and where. Then the edges: a developer of shop sees nothing of billing, pipeline approvers
//! and impersonation, tokens that stopped working, `troupe auth`, and the audit log; and the
//! dependency graph, judged as a read of what it is drawn from.

mod fixture;
mod graph;
mod matrix;

use std::collections::BTreeSet;

use fixture::{LEDGER_TWO, Role, fixture, workload_api, workload_ledger};
use serde_json::json;
use troupe_tests::probes::{Client, Op, cli_as, code, keys_of};
use troupe_tests::{PATIENCE, eventually, stderr, stdout, success};

#[test]
fn a_developer_of_shop_sees_and_touches_nothing_of_billing() {
    let f = fixture();
    let dev = f.token(Role::Developer);
    let read = &Client::Grpcurl.probe(
        &f.platform,
        dev,
        &json!([Op::get("Component", "ledger").call("grpcurl")]),
    )[0];
    assert_eq!(read.code, code::PERMISSION_DENIED, "{read:?}");
    for word in ["get", "Component", "acme/ledger", "billing"] {
        assert!(read.message.contains(word), "{word} not in {read:?}");
    }

    let list = json!([{"service": "ResourceService", "method": "List",
                       "request": {"kind": "Component", "namespace": "acme"}}]);
    let listed = &Client::Python.probe(&f.platform, dev, &list)[0];
    assert_eq!(listed.code, code::OK, "{listed:?}");
    assert_eq!(
        keys_of(&listed.body),
        BTreeSet::from(["Component acme/api".to_string()]),
        "the developer lists only shop's components"
    );

    // A watch of every kind from the list's revision on: billing gets a component, then shop
    // a workload change. The watch carries the second and never the first.
    let since = listed.body["revision"]
        .as_str()
        .expect("a revision")
        .to_string();
    let marker = "shop-change-seen-by-the-watch";
    let watch = json!([{"service": "ResourceService", "method": "Watch", "stream": true,
                        "request": {"kind": "", "namespace": "", "sinceRevision": since},
                        "until": marker, "timeoutMs": PATIENCE.as_millis() as u64}]);
    let watched = std::thread::scope(|s| {
        let watcher = s.spawn(|| Client::Node.probe(&f.platform, dev, &watch));
        success(&f.admin_cli(&["apply", "-f", "-"], Some(LEDGER_TWO)));
        let mut change = workload_api();
        change["metadata"]["labels"]["change"] = json!(marker);
        success(&f.admin_cli(&["apply", "-f", "-"], Some(&change.to_string())));
        watcher.join().expect("the watching thread")
    });
    let events = &watched[0];
    let seen = keys_of(&events.body);
    assert!(
        events.code == code::OK && events.body.to_string().contains(marker),
        "the shop change arrives: {events:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|k| k.contains("ledger") || k.contains("billing")),
        "a billing object reached shop's developer: {seen:?}"
    );

    let binding = "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {name: ledger-development, namespace: acme}
spec:
  owner: {projectName: billing, componentName: ledger}
  environment: development
  releaseName: ledger-0000000000
";
    let refusals = [
        (
            cli_as(&f.platform, dev, &["apply", "-f", "-"], Some(binding)),
            ["apply", "ReleaseBinding"],
        ),
        (
            cli_as(
                &f.platform,
                dev,
                &["promote", "ledger", "-n", "acme", "--to", "staging"],
                None,
            ),
            ["promote", "Promotion"],
        ),
        (
            cli_as(
                &f.platform,
                dev,
                &["render", "ledger", "-n", "acme", "--env", "development"],
                None,
            ),
            ["render", "Component"],
        ),
    ];
    for (out, words) in refusals {
        let text = stderr(&out);
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(text.contains("PermissionDenied"), "{text}");
        for word in words.iter().chain(&["acme", "billing"]) {
            assert!(text.contains(word), "{word} not in {text}");
        }
    }
}

#[test]
fn approvers_and_impersonation_decide_who_moves_a_release() {
    let f = fixture();
    let release = f.platform.cut_release("api");
    f.platform.bind("api", "development", &release, "");
    let promote = [
        "promote", "api", "-n", "acme", "--to", "staging", "--as", "bob",
    ];

    let out = cli_as(&f.platform, f.token(Role::Developer), &promote, None);
    let text = stderr(&out);
    assert!(
        !out.status.success() && text.contains("PermissionDenied"),
        "{text}"
    );
    assert!(
        text.contains("impersonate") && text.contains("bob"),
        "{text}"
    );

    let out = success(&f.admin_cli(&promote, None));
    let name = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("promotion/"))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no promotion in {out:?}"))
        .to_string();
    let record = f
        .platform
        .get_json("promotion", "acme", &name)
        .expect("the promotion");
    assert_eq!(record["spec"]["requestedBy"], "bob", "{record:#}");
    assert_eq!(record["spec"]["impersonatedBy"], "admin", "{record:#}");

    // A developer of shop may approve promotions of shop, but this edge names its approvers.
    let calls = json!([{"service": "PromotionService", "method": "Approve",
                        "request": {"namespace": "acme", "promotion": name}}]);
    let refused = &Client::Python.probe(&f.platform, f.token(Role::SecondDeveloper), &calls)[0];
    assert_eq!(refused.code, code::PERMISSION_DENIED, "{refused:?}");
    assert!(
        refused.message.contains("approve") && refused.message.contains("alice"),
        "{refused:?}"
    );

    let approved = success(&f.admin_cli(&["approve", &name, "-n", "acme", "--as", "alice"], None));
    let record = f
        .platform
        .get_json("promotion", "acme", &name)
        .expect("the promotion");
    let approvals = &record["status"]["approvals"];
    assert_eq!(approvals[0]["user"], "alice", "{approved}\n{record:#}");
    assert_eq!(approvals[0]["impersonatedBy"], "admin", "{record:#}");
}

#[test]
fn tokens_that_prove_nothing_are_unauthenticated_with_the_reason() {
    let f = fixture();
    let whoami = json!([{"service": "AuthService", "method": "WhoAmI", "request": {}}]);
    let refused = |client: Client, token: &str| {
        let answer = client.probe(&f.platform, token, &whoami).remove(0);
        assert_eq!(answer.code, code::UNAUTHENTICATED, "{client:?}: {answer:?}");
        answer.message
    };

    let brief = f.create_token("brief", "", "1s");
    eventually("a one-second token is refused", PATIENCE, || {
        let out = cli_as(&f.platform, &brief, &["auth", "whoami"], None);
        (!out.status.success() && stderr(&out).contains("expired")).then_some(())
    });
    let message = refused(Client::Grpcurl, &brief);
    assert!(message.contains("API token brief expired at"), "{message}");

    let gone = f.create_token("gone", "", "1h");
    assert_eq!(
        Client::Python.probe(&f.platform, &gone, &whoami)[0].code,
        code::OK
    );
    success(&f.admin_cli(&["token", "revoke", "gone"], None));
    let message = refused(Client::Python, &gone);
    assert!(
        message.contains("API token gone was revoked at"),
        "{message}"
    );

    let unknown = format!("trp_{}", "0".repeat(64));
    assert!(refused(Client::Node, &unknown).contains("unknown API token"));

    let out = cli_as(
        &f.platform,
        "not-a-token",
        &["get", "components", "-n", "acme"],
        None,
    );
    let text = stderr(&out);
    assert!(
        text.contains("Unauthenticated") && text.contains("malformed token"),
        "{text}"
    );

    for client in Client::ALL {
        assert!(refused(client, "").contains("no credentials"), "{client:?}");
    }
}

#[test]
fn a_watch_of_a_kind_out_of_reach_is_refused_naming_the_kind() {
    let f = fixture();
    // ci-publisher reads workloads and runs, not environments; the kind is named canonically
    // however the caller spelt it.
    let out = cli_as(
        &f.platform,
        f.token(Role::Ci),
        &["watch", "env", "-n", "acme"],
        None,
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("ci may not watch Environment in namespace acme")
            && stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn auth_whoami_and_can_i_answer_for_the_caller() {
    let f = fixture();
    let dev = f.token(Role::Developer);
    let out = success(&cli_as(
        &f.platform,
        dev,
        &["auth", "whoami", "-o", "json"],
        None,
    ));
    let me: serde_json::Value = serde_json::from_str(&out).expect("JSON from whoami");
    assert_eq!(me["user"], "dev-shop", "{me:#}");
    assert_eq!(me["groups"], json!(["shop-team"]), "{me:#}");
    assert_eq!(me["authenticatedBy"], "token:dev-shop", "{me:#}");

    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        cli_as(&f.platform, dev, &all, None)
    };
    let yes = can_i(&["apply", "workload", "api", "-n", "acme"]);
    assert_eq!(yes.status.code(), Some(0), "{}", stderr(&yes));
    assert_eq!(stdout(&yes).trim(), "yes");
    let no = can_i(&["apply", "workload", "ledger", "-n", "acme"]);
    assert_eq!(no.status.code(), Some(1), "{}", stderr(&no));
    let text = stdout(&no);
    assert!(
        text.starts_with("no: ") && text.contains("billing"),
        "{text}"
    );
    let no = can_i(&["delete", "environment", "development", "-n", "acme"]);
    assert_eq!(no.status.code(), Some(1), "{}", stdout(&no));
}

#[test]
fn the_audit_log_has_a_line_for_a_denial_and_for_an_apply() {
    let f = fixture();
    let mut change = workload_api();
    change["metadata"]["labels"]["audited"] = json!("yes");
    let calls = json!([
        Op::Apply(workload_ledger()).call("audit"),
        Op::Apply(change).call("audit"),
    ]);
    let answers = Client::Node.probe(&f.platform, f.token(Role::Developer), &calls);
    assert_eq!(answers[0].code, code::PERMISSION_DENIED, "{answers:?}");
    assert_eq!(answers[1].code, code::OK, "{answers:?}");
    let revision = answers[1].body["resource"]["workload"]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok())
        .expect("the applied workload's revision");

    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(f.platform.data_dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let deny = lines().into_iter().find(|l| {
        l["decision"] == "deny"
            && l["principal"] == "dev-shop"
            && l["verb"] == "apply"
            && l["kind"] == "Workload"
            && l["name"] == "ledger"
    });
    let deny = deny.expect("a deny line for the developer's apply of billing's workload");
    assert_eq!(deny["project"], "billing", "{deny}");
    assert!(
        deny["reason"].as_str().is_some_and(|r| r.contains("apply")),
        "{deny}"
    );
    let allow = lines().into_iter().find(|l| {
        l["decision"] == "allow" && l["principal"] == "dev-shop" && l["revision"] == revision
    });
    let allow = allow.expect("an allow line with the apply's revision");
    assert_eq!(
        (
            &allow["verb"],
            &allow["kind"],
            &allow["name"],
            &allow["project"]
        ),
        (
            &json!("apply"),
            &json!("Workload"),
            &json!("api"),
            &json!("shop")
        ),
        "{allow}"
    );
    // Named by the server that wrote it (by default HOSTNAME:API_PORT), as are denials.
    let port = f.platform.addr.rsplit(':').next().unwrap();
    for line in [&allow, &deny] {
        let server = line["server"].as_str().unwrap_or_default();
        assert!(server.ends_with(&format!(":{port}")), "{line}");
    }

    // A call the roles allow but a rule of the platform refuses is a denial too: even the
    // admin cannot hand in a Release.
    let forged = "apiVersion: troupe.dev/v1alpha1
kind: Release
metadata: {name: api-forged, namespace: acme}
spec:
  owner: {projectName: shop, componentName: api}
  environment: development
  dataPlaneRef: {kind: DataPlane, name: local}
";
    let out = f
        .platform
        .cli_with_stdin(&["apply", "-f", "-"], Some(forged));
    assert!(!out.status.success());
    let deny = lines().into_iter().find(|l| {
        l["decision"] == "deny"
            && l["principal"] == "admin"
            && l["kind"] == "Release"
            && l["name"] == "api-forged"
    });
    let deny = deny.expect("a deny line for the admin's forged Release");
    assert!(
        deny["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is written by the control plane")),
        "{deny}"
    );
}
