//! Kubernetes' own naming rules, for the objects Troupe sends to a cluster: API versions,
//! kinds, object names (with the stricter rules some kinds have), namespaces, label and
//! annotation keys and label values. Each check returns what is wrong, phrased to follow the
//! quoted value in an error message (`"Api" is not a DNS-1123 label: …`).
//!
//! The checks are hand-written byte loops: they run on every rendered object, and compiling
//! or running a regular expression there would cost more than the render itself.

use crate::names::check_dns_label;

/// Longest DNS-1123 subdomain (object names, label key prefixes, API groups).
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest DNS label, label key name part and label value.
pub const MAX_LABEL_LEN: usize = 63;
/// Most bytes all the annotations of one object may take (keys and values).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// The rule an object's `metadata.name` follows, which depends on its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain of at most `max` characters (253 for most kinds).
    Subdomain {
        /// Longest name allowed.
        max: usize,
    },
    /// A DNS-1123 label: at most 63 lowercase letters, digits and '-'.
    Label,
    /// A DNS-1035 label: a DNS-1123 label that starts with a letter.
    Label1035,
}

/// Kinds whose names Kubernetes restricts beyond a DNS-1123 subdomain, as `(group, kind,
/// rule)`. Names of RBAC kinds are path segments in Kubernetes (`system:foo` is legal); Troupe
/// holds them to subdomains like the rest, so every name is safe as a path and a label value.
const NAME_RULES: &[(&str, &str, NameRule)] = &[
    ("", "Namespace", NameRule::Label),
    ("", "Service", NameRule::Label1035),
    // Pods of a Job carry its name as a label value.
    ("batch", "Job", NameRule::Subdomain { max: 63 }),
    // A CronJob's Jobs are named after it plus an 11-character suffix.
    ("batch", "CronJob", NameRule::Subdomain { max: 52 }),
];

/// The rule `metadata.name` follows for objects of `group`/`kind`.
pub fn name_rule(group: &str, kind: &str) -> NameRule {
    NAME_RULES
        .iter()
        .find(|(g, k, _)| *k == kind && *g == group)
        .map_or(
            NameRule::Subdomain {
                max: MAX_SUBDOMAIN_LEN,
            },
            |(_, _, rule)| *rule,
        )
}

/// Checks an object's `metadata.name` against the rule of its kind.
pub fn check_object_name(group: &str, kind: &str, name: &str) -> Result<(), String> {
    match name_rule(group, kind) {
        NameRule::Subdomain { max } => subdomain(name, max),
        NameRule::Label => check_dns_label(name).map_err(|why| label_why(&why)),
        NameRule::Label1035 => check_dns1035_label(name),
    }
}

/// Checks a DNS-1123 subdomain: at most 253 characters, dot-separated parts of lowercase
/// letters, digits and '-', each starting and ending with a letter or digit.
pub fn check_dns_subdomain(value: &str) -> Result<(), String> {
    subdomain(value, MAX_SUBDOMAIN_LEN)
}

/// Checks a DNS-1035 label: a DNS-1123 label that starts with a letter.
pub fn check_dns1035_label(value: &str) -> Result<(), String> {
    check_dns_label(value).map_err(|why| format!("is not a DNS-1035 label: it {why}"))?;
    if !value.as_bytes()[0].is_ascii_lowercase() {
        return Err("is not a DNS-1035 label: it must start with a lowercase letter".into());
    }
    Ok(())
}

/// Checks a namespace name: a DNS-1123 label.
pub fn check_namespace(value: &str) -> Result<(), String> {
    check_dns_label(value).map_err(|why| label_why(&why))
}

/// Checks an `apiVersion`: `version` (the core group) or `group/version`, the group a DNS-1123
/// subdomain and the version a DNS-1123 label.
pub fn check_api_version(value: &str) -> Result<(), String> {
    let (group, version) = value.split_once('/').unwrap_or(("", value));
    if value.contains('/') {
        subdomain(group, MAX_SUBDOMAIN_LEN).map_err(|why| format!("has a group that {why}"))?;
    }
    check_dns_label(version).map_err(|why| {
        format!("is not `version` or `group/version`: the version {why} (a DNS-1123 label)")
    })
}

/// Checks a kind: an identifier starting with an uppercase letter, of ASCII letters and
/// digits, at most 63 characters (`Deployment`, `HTTPRoute`).
pub fn check_kind(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err("must not be empty".into());
    }
    if bytes.len() > MAX_LABEL_LEN {
        return Err(too_long("is", bytes.len(), MAX_LABEL_LEN));
    }
    if !bytes[0].is_ascii_uppercase() {
        return Err("is not a kind: it must start with an uppercase letter".into());
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(format!(
            "is not a kind: it contains {c:?}; only ASCII letters and digits are allowed"
        ));
    }
    Ok(())
}

/// Checks a label or annotation key: an optional prefix (a DNS-1123 subdomain) and `/`, then
/// a name of 1–63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
pub fn check_qualified_name(value: &str) -> Result<(), String> {
    let (prefix, name) = match value.rsplit_once('/') {
        Some((prefix, name)) => {
            subdomain(prefix, MAX_SUBDOMAIN_LEN)
                .map_err(|why| format!("has a prefix that {why}"))?;
            (true, name)
        }
        None => (false, value),
    };
    if name.is_empty() {
        return Err(if prefix {
            "has an empty name after its prefix".into()
        } else {
            "must not be empty".into()
        });
    }
    label_value(name).map_err(|why| format!("has a name part that {why}"))
}

/// Checks a label value: empty, or 1–63 letters, digits, '-', '_' and '.', starting and
/// ending with a letter or digit.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    label_value(value)
}

fn label_value(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    if bytes.len() > MAX_LABEL_LEN {
        return Err(too_long("is", bytes.len(), MAX_LABEL_LEN));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain of at most `max` characters.
fn subdomain(value: &str, max: usize) -> Result<(), String> {
    const WHAT: &str = "is not a DNS-1123 subdomain";
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(format!("{WHAT}: it is empty"));
    }
    if bytes.len() > max {
        return Err(format!("{WHAT}: {}", too_long("it is", bytes.len(), max)));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')))
    {
        return Err(format!(
            "{WHAT}: it contains {c:?}; only lowercase letters, digits, '-' and '.' are allowed"
        ));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    for part in value.split('.') {
        let p = part.as_bytes();
        if p.is_empty() || !alnum(p[0]) || !alnum(p[p.len() - 1]) {
            return Err(format!(
                "{WHAT}: each dot-separated part must start and end with a lowercase letter or digit"
            ));
        }
    }
    Ok(())
}

fn label_why(why: &str) -> String {
    format!("is not a DNS-1123 label: it {why}")
}

fn too_long(subject: &str, len: usize, max: usize) -> String {
    format!("{subject} {len} characters long; at most {max} are allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_a_version_or_a_group_and_a_version() {
        for ok in [
            "v1",
            "apps/v1",
            "gateway.networking.k8s.io/v1beta1",
            "example.com/v1",
        ] {
            assert_eq!(check_api_version(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/v1",
            "apps/",
            "Apps/v1",
            "apps/V1",
            "a/b/c",
            "../../etc",
            "apps/v1 ",
        ] {
            assert!(check_api_version(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_api_version("a/b/c").unwrap_err(),
            "is not `version` or `group/version`: the version contains '/'; only lowercase \
             letters, digits and '-' are allowed (a DNS-1123 label)"
        );
    }

    #[test]
    fn kinds_are_identifiers() {
        for ok in ["Deployment", "HTTPRoute", "V1Thing"] {
            assert_eq!(check_kind(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "deployment",
            "../../etc",
            "Deploy-ment",
            "Déploiement",
            "/etc/passwd",
        ] {
            assert!(check_kind(bad).is_err(), "{bad:?}");
        }
        assert!(
            check_kind(&format!("A{}", "a".repeat(63)))
                .unwrap_err()
                .contains("64")
        );
    }

    #[test]
    fn object_names_follow_the_rule_of_their_kind() {
        assert_eq!(check_object_name("apps", "Deployment", "api.v2-x"), Ok(()));
        assert_eq!(
            check_object_name("apps", "Deployment", &"a".repeat(253)),
            Ok(())
        );
        assert!(check_object_name("apps", "Deployment", &"a".repeat(254)).is_err());
        for bad in [
            "",
            "Api",
            "api_",
            "../etc",
            "/etc/passwd",
            ".",
            "..",
            "a..b",
            "-a",
            "a.",
        ] {
            assert!(
                check_object_name("apps", "Deployment", bad).is_err(),
                "{bad:?}"
            );
        }
        // Services are DNS-1035 labels: no dot, no leading digit.
        assert!(check_object_name("", "Service", "api.v2").is_err());
        assert_eq!(
            check_object_name("", "Service", "2api").unwrap_err(),
            "is not a DNS-1035 label: it must start with a lowercase letter"
        );
        assert!(check_object_name("", "Namespace", &"a".repeat(64)).is_err());
        assert_eq!(
            check_object_name("batch", "CronJob", &"a".repeat(52)),
            Ok(())
        );
        assert!(check_object_name("batch", "CronJob", &"a".repeat(53)).is_err());
        assert_eq!(
            check_object_name("apps", "Deployment", "Api").unwrap_err(),
            "is not a DNS-1123 subdomain: it contains 'A'; only lowercase letters, digits, '-' \
             and '.' are allowed"
        );
    }

    #[test]
    fn label_keys_have_an_optional_subdomain_prefix_and_a_short_name() {
        for ok in [
            "app",
            "troupe.dev/release",
            "app.kubernetes.io/name",
            "A_b.c-D",
        ] {
            assert_eq!(check_qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/app",
            "troupe.dev/",
            "Troupe.dev/app",
            "a/b/c",
            "-app",
            "app-",
            "ap p",
            &"a".repeat(64),
        ] {
            assert!(check_qualified_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_qualified_name(&format!("{}/a", "a".repeat(254))).unwrap_err(),
            "has a prefix that is not a DNS-1123 subdomain: it is 254 characters long; at most \
             253 are allowed"
        );
    }

    #[test]
    fn label_values_are_empty_or_short_names() {
        for ok in ["", "v1.2_3-a", &"a".repeat(63)] {
            assert_eq!(check_label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-a", "a-", "a b", "a/b", &"a".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert_eq!(check_namespace("kube-system"), Ok(()));
        assert!(check_namespace("a.b").is_err());
        assert!(check_namespace("").is_err());
    }
}
