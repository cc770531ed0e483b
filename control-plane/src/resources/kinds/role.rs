//! Role and ClusterRole: rules of kinds and verbs. Each word must be one the evaluator knows
//! (a canonical kind name, a pseudo-kind, a verb, or `*`): a misspelt word would otherwise
//! grant nothing, silently. Roles point at nothing; bindings point at them (`role_binding.rs`).

use troupe_common::Kind;
use troupe_common::access::{ANY, Verb, is_rule_kind, pseudo_kind};
use troupe_common::pb::v1alpha1 as pb;

use super::{Ctx, Error, Rules};

impl Rules for pb::Role {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        check_rules(ctx, self.spec.as_ref())
    }
}

impl Rules for pb::ClusterRole {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        check_rules(ctx, self.spec.as_ref())
    }
}

/// Every rule names at least one kind and one verb, each a word the evaluator knows.
fn check_rules(ctx: &Ctx<'_>, spec: Option<&pb::RoleSpec>) -> Result<(), Error> {
    let Some(spec) = spec else { return Ok(()) };
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if rule.kinds.is_empty() {
            return Err(ctx.invalid(format!("{at}.kinds"), "required (\"*\" for every kind)"));
        }
        if rule.verbs.is_empty() {
            return Err(ctx.invalid(format!("{at}.verbs"), "required (\"*\" for every verb)"));
        }
        for (j, kind) in rule.kinds.iter().enumerate() {
            if !is_rule_kind(kind) {
                return Err(ctx.invalid(format!("{at}.kinds[{j}]"), unknown_kind(kind)));
            }
        }
        for (j, verb) in rule.verbs.iter().enumerate() {
            if verb != ANY && Verb::parse(verb).is_none() {
                let known: Vec<&str> = Verb::ALL.iter().map(|v| v.as_str()).collect();
                return Err(ctx.invalid(
                    format!("{at}.verbs[{j}]"),
                    format!(
                        "{verb:?} is not a verb: one of {}, or \"*\"",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Why `word` is not a rule kind, with the canonical name when it is another spelling of one.
fn unknown_kind(word: &str) -> String {
    match Kind::parse(word) {
        Ok(kind) => format!(
            "{word:?} is not a canonical kind name: write {:?}",
            kind.name()
        ),
        Err(_) => format!(
            "{word:?} is not a kind: name a kind (e.g. Component), one of {}, or \"*\"",
            pseudo_kind::ALL.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use troupe_common::Object;
    use troupe_common::pb::v1alpha1 as pb;

    use crate::render::template::{Engine, Limits};
    use crate::resources::validate::check;

    fn mk_role(kinds: &[&str], verbs: &[&str]) -> Object {
        Object::Role(pb::Role {
            metadata: Some(pb::ObjectMeta {
                name: "deployer".into(),
                namespace: "acme".into(),
                ..Default::default()
            }),
            spec: Some(pb::RoleSpec {
                rules: vec![
                    pb::AccessRule {
                        kinds: vec!["Component".into()],
                        verbs: vec!["get".into()],
                    },
                    pb::AccessRule {
                        kinds: kinds.iter().map(|k| k.to_string()).collect(),
                        verbs: verbs.iter().map(|v| v.to_string()).collect(),
                    },
                ],
            }),
            ..Default::default()
        })
    }

    fn mk_check(object: &Object) -> Result<(), String> {
        check(object, &Engine::new(Limits::default())).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_name_known_kinds_and_verbs() {
        assert_eq!(
            mk_check(&mk_role(
                &["ReleaseBinding", "ApiToken"],
                &["apply", "token"]
            )),
            Ok(())
        );
        assert_eq!(mk_check(&mk_role(&["*"], &["*"])), Ok(()));
        assert_eq!(
            mk_check(&mk_role(&["Component"], &["get", "deploy"])),
            Err(
                "Role acme/deployer: spec.rules[1].verbs[1]: \"deploy\" is not a verb: one of \
                 get, list, watch, apply, delete, promote, approve, check, rollback, render, \
                 token, impersonate, or \"*\""
                    .into()
            )
        );
        assert_eq!(
            mk_check(&mk_role(&["Component", "comp"], &["get"])),
            Err(
                "Role acme/deployer: spec.rules[1].kinds[1]: \"comp\" is not a canonical kind \
                 name: write \"Component\""
                    .into()
            )
        );
        assert_eq!(
            mk_check(&mk_role(&["Gadget"], &["get"])),
            Err(
                "Role acme/deployer: spec.rules[1].kinds[0]: \"Gadget\" is not a kind: name a \
                 kind (e.g. Component), one of ApiToken, User, Group, Server, or \"*\""
                    .into()
            )
        );
        assert_eq!(
            mk_check(&mk_role(&[], &["get"])),
            Err("Role acme/deployer: spec.rules[1].kinds: required (\"*\" for every kind)".into())
        );
    }
}
