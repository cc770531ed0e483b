//! Egress allow lists: what a well-formed rule is, and how a component's list narrows its
//! project's.
//!
//! A project that controls egress sets a ceiling: a component of it may list its own rules,
//! but each must fit within one of the project's (a CIDR inside a project CIDR, a host equal
//! to a project host or one label under a project `*.` name, and no port the project rule
//! does not allow). `*.example.com` stands for the names one label under `example.com`, as
//! Cilium matches it, so what is checked here is what is enforced.

use std::net::IpAddr;

use troupe_common::pb::v1alpha1 as pb;

/// The egress rules in force for a component of a project: `None` when neither controls
/// egress. A component that controls egress within a project that does must fit within the
/// project's rules; the error names the first rule that does not, by its index, and what the
/// project allows (`spec.egress.allow[1] (11.0.0.0/8 on every port) is not within …`).
pub fn effective_egress(
    project: Option<&pb::EgressPolicy>,
    component: Option<&pb::EgressPolicy>,
) -> Result<Option<Vec<pb::EgressRule>>, String> {
    let project = project.filter(|p| p.enabled);
    let component = component.filter(|c| c.enabled);
    match (project, component) {
        (None, None) => Ok(None),
        (None, Some(component)) => Ok(Some(component.allow.clone())),
        (Some(project), None) => Ok(Some(project.allow.clone())),
        (Some(project), Some(component)) => {
            for (i, rule) in component.allow.iter().enumerate() {
                if !project.allow.iter().any(|ceiling| within(rule, ceiling)) {
                    return Err(format!(
                        "spec.egress.allow[{i}] ({}) is not within the project's egress allow \
                         list ({}): narrow it, or widen the project's",
                        describe(rule),
                        describe_all(&project.allow),
                    ));
                }
            }
            Ok(Some(component.allow.clone()))
        }
    }
}

/// Checks one egress policy as written (`field` is where it sits, e.g. `spec.egress`):
/// exactly one of `cidr` and `host` per rule, a valid CIDR or host name, ports in range.
pub fn check_egress(field: &str, egress: &pb::EgressPolicy) -> Result<(), (String, String)> {
    for (i, rule) in egress.allow.iter().enumerate() {
        let at = format!("{field}.allow[{i}]");
        match (rule.cidr.is_empty(), rule.host.is_empty()) {
            (false, true) => Cidr::parse(&rule.cidr)
                .map(drop)
                .map_err(|reason| (format!("{at}.cidr"), reason))?,
            (true, false) => {
                check_host(&rule.host).map_err(|reason| (format!("{at}.host"), reason))?
            }
            _ => return Err((at, "set exactly one of cidr and host".to_string())),
        }
        for (j, port) in rule.ports.iter().enumerate() {
            if !(1..=65535).contains(port) {
                let reason = format!("port {port} is not within 1–65535");
                return Err((format!("{at}.ports[{j}]"), reason));
            }
        }
    }
    Ok(())
}

/// An IP block: a network address (no bits set past the prefix) and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    address: IpAddr,
    prefix: u32,
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let Some((address, prefix)) = text.split_once('/') else {
            return Err(format!(
                "{text} is not in CIDR notation: write an address and a prefix length, e.g. \
                 10.0.0.0/8 or 2001:db8::/32"
            ));
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{address} is not an IPv4 or IPv6 address"))?;
        let width = width(address);
        let prefix = Some(prefix)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("prefix length {prefix} is not within 0–{width}"))?;
        let network = masked(address, prefix);
        if network != address {
            // Clusters refuse (or silently widen) such blocks; say which one was meant.
            return Err(format!(
                "{text} has address bits set past its prefix length: write {network}/{prefix}"
            ));
        }
        Ok(Cidr { address, prefix })
    }

    /// Whether every address of `inner` is in `self` (never across IPv4 and IPv6).
    fn contains(&self, inner: &Cidr) -> bool {
        self.address.is_ipv4() == inner.address.is_ipv4()
            && self.prefix <= inner.prefix
            && masked(inner.address, self.prefix) == self.address
    }
}

fn width(address: IpAddr) -> u32 {
    if address.is_ipv4() { 32 } else { 128 }
}

/// `address` with every bit past the first `prefix` cleared.
fn masked(address: IpAddr, prefix: u32) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// A lowercase DNS name (labels of 1–63 letters, digits and inner hyphens, 253 at most), or
/// `*.` followed by one.
fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{host} is not a lowercase DNS name (e.g. api.example.com) or `*.` followed by one"
        ))
    }
}

/// Whether `rule` allows nothing that `ceiling` does not.
fn within(rule: &pb::EgressRule, ceiling: &pb::EgressRule) -> bool {
    let destination = if !rule.cidr.is_empty() {
        match (Cidr::parse(&rule.cidr), Cidr::parse(&ceiling.cidr)) {
            (Ok(inner), Ok(outer)) => outer.contains(&inner),
            _ => false,
        }
    } else {
        !rule.host.is_empty() && host_within(&rule.host, &ceiling.host)
    };
    let ports = ceiling.ports.is_empty()
        || (!rule.ports.is_empty() && rule.ports.iter().all(|p| ceiling.ports.contains(p)));
    destination && ports
}

/// `host` equals `ceiling`, or is one label under a `*.` ceiling.
fn host_within(host: &str, ceiling: &str) -> bool {
    if host == ceiling {
        return !host.is_empty();
    }
    let Some(suffix) = ceiling.strip_prefix("*.") else {
        return false;
    };
    host.strip_suffix(suffix)
        .and_then(|rest| rest.strip_suffix('.'))
        .is_some_and(|label| !label.is_empty() && !label.contains('.') && label != "*")
}

/// A rule as the user wrote it, for messages: `10.0.0.0/8 on ports 443, 8443`.
fn describe(rule: &pb::EgressRule) -> String {
    let destination = if rule.cidr.is_empty() {
        &rule.host
    } else {
        &rule.cidr
    };
    match rule.ports.as_slice() {
        [] => format!("{destination} on every port"),
        [port] => format!("{destination} on port {port}"),
        ports => {
            let ports: Vec<String> = ports.iter().map(i32::to_string).collect();
            format!("{destination} on ports {}", ports.join(", "))
        }
    }
}

fn describe_all(rules: &[pb::EgressRule]) -> String {
    if rules.is_empty() {
        return "empty: nothing besides DNS and connections".to_string();
    }
    rules.iter().map(describe).collect::<Vec<_>>().join("; ")
}
