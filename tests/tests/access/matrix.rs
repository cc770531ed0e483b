//! The matrix: each role asks a read, a write in its scope, a write out of it, a list across
//! namespaces and a watch of everything, through each of grpcurl, Python, Node and the CLI,
//! and every tool gets the answer the role should.

use troupe_tests::probes::{Answer, Op, Tool, ask, code};

use crate::fixture::{
    Role, component_api, environment_qa, fixture, namespace_acme, workload_api, workload_ledger,
};
use Expect::{Allowed, Denied};

/// What a role should be answered.
enum Expect {
    /// OK, and among the objects in the answer every key in `has` and none matching `lacks`.
    Allowed {
        has: &'static [&'static str],
        lacks: &'static [&'static str],
    },
    /// PERMISSION_DENIED with a message naming each of these words.
    Denied(&'static [&'static str]),
}

/// What marks billing's objects among keys (`Project acme/billing`, `Component acme/ledger`).
const BILLING: &[&str] = &["billing", "ledger"];

/// OK, showing at least `has`.
fn sees(has: &'static [&'static str]) -> Expect {
    Allowed { has, lacks: &[] }
}

/// OK, showing at least `has` and nothing matching `lacks`.
fn sees_only(has: &'static [&'static str], lacks: &'static [&'static str]) -> Expect {
    Allowed { has, lacks }
}

/// One question and its expected answer.
type Case = (&'static str, Op, Expect);

/// The five questions asked of `role` (a read, a write in scope, a write out of scope, a list
/// across namespaces, a watch of everything), with the answers it should get.
fn cases(role: Role) -> Vec<Case> {
    let read = |name| ("read", Op::get("Component", name), sees(component(name)));
    let write = |object, expect| ("write", Op::Apply(object), expect);
    let outside = |object, expect| ("write out of scope", Op::Apply(object), expect);
    let list = |kind, expect| ("list all namespaces", Op::ListAll(kind), expect);
    let watch = |expect| ("watch everything", Op::WatchAll, expect);
    let everything = || sees(&["Project acme/billing", "Component acme/api"]);
    let components = || sees(&["Component acme/api", "Component acme/ledger"]);
    match role {
        Role::Admin => vec![
            read("ledger"),
            write(workload_ledger(), sees(&[])),
            // Nothing is out of the admin's scope, a cluster-scoped object included.
            outside(namespace_acme(), sees(&["Namespace acme"])),
            list("Component", components()),
            watch(everything()),
        ],
        Role::PlatformEngineer => vec![
            read("ledger"),
            write(environment_qa(), sees(&["Environment acme/qa"])),
            outside(component_api(), Denied(&["apply", "Component", "acme"])),
            list("Component", components()),
            watch(everything()),
        ],
        Role::Developer | Role::SecondDeveloper => vec![
            read("api"),
            write(workload_api(), sees(&["Workload acme/api"])),
            outside(
                workload_ledger(),
                Denied(&["apply", "Workload", "acme", "billing"]),
            ),
            list("Component", sees_only(&["Component acme/api"], BILLING)),
            watch(sees_only(
                &["Component acme/api", "Workload acme/api"],
                BILLING,
            )),
        ],
        Role::Viewer => vec![
            read("ledger"),
            write(
                workload_api(),
                Denied(&["apply", "Workload", "acme", "shop"]),
            ),
            outside(namespace_acme(), Denied(&["apply", "Namespace", "acme"])),
            list("Component", components()),
            watch(everything()),
        ],
        Role::Ci => vec![
            read("api"),
            write(workload_api(), sees(&["Workload acme/api"])),
            outside(
                workload_ledger(),
                Denied(&["apply", "Workload", "acme", "billing"]),
            ),
            list("Workload", sees_only(&["Workload acme/api"], BILLING)),
            // ci-publisher watches Workloads and WorkflowRuns only, of component api.
            watch(sees_only(
                &["Workload acme/api"],
                &["billing", "ledger", "Component ", "Project "],
            )),
        ],
    }
}

/// The key of Component acme/`name`.
fn component(name: &str) -> &'static [&'static str] {
    match name {
        "api" => &["Component acme/api"],
        _ => &["Component acme/ledger"],
    }
}

fn judge(who: &str, expect: &Expect, answer: &Answer) -> Result<(), String> {
    match expect {
        Allowed { has, lacks } => {
            if answer.code != code::OK {
                return Err(format!("{who}: expected OK, got {answer:?}"));
            }
            let missing: Vec<_> = has.iter().filter(|k| !answer.keys.contains(**k)).collect();
            let leaked: Vec<_> = answer
                .keys
                .iter()
                .filter(|k| lacks.iter().any(|l| k.contains(l)))
                .collect();
            if !missing.is_empty() || !leaked.is_empty() {
                return Err(format!(
                    "{who}: missing {missing:?}, should not see {leaked:?}; saw {:?}",
                    answer.keys
                ));
            }
        }
        Denied(words) => {
            let unnamed: Vec<_> = words
                .iter()
                .filter(|w| !answer.message.contains(**w))
                .collect();
            if answer.code != code::PERMISSION_DENIED || !unnamed.is_empty() {
                return Err(format!(
                    "{who}: expected PERMISSION_DENIED naming {words:?}, got {answer:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_role_gets_the_same_answers_from_every_client() {
    let f = fixture();
    let mut failures = Vec::new();
    for role in Role::MATRIX {
        let cases = cases(role);
        let ops: Vec<&Op> = cases.iter().map(|(_, op, _)| op).collect();
        for client in Tool::ALL {
            let answers = ask(&f.platform, client, f.token(role), &ops);
            for ((what, _, expect), answer) in cases.iter().zip(&answers) {
                let who = format!("{role:?} {what} through {client:?}");
                if let Err(e) = judge(&who, expect, answer) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
