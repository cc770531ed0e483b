//! Where a server keeps its objects, as `troupe server --store` names it: sled in the data
//! directory (the default, or memory without one), or etcd. The URL is parsed here, at the
//! edge, into a [`StoreLocation`] that cannot be malformed; opening it is the server's job,
//! and etcd needs the `etcd` feature (the parsing does not).

use std::fmt;
use std::str::FromStr;

/// The prefix the etcd store keeps its keys under when the URL names none.
pub const DEFAULT_ETCD_PREFIX: &str = "/troupe";

/// Operations one etcd transaction holds at most by default (etcd's `--max-txn-ops`).
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Bytes one etcd request holds at most by default (etcd's `--max-request-bytes`).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Where a server's store lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled in the data directory, or memory when the server has none.
    #[default]
    DataDir,
    /// etcd v3, reached at an [`EtcdUrl`].
    Etcd(EtcdUrl),
}

/// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?max-txn-ops=N&max-request-bytes=B]`: the members
/// of one etcd cluster (plain HTTP), the key prefix the store keeps to, and the transaction
/// limits that cluster was started with (etcd's defaults unless named), which the store keeps
/// its transactions within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// Every key of the store lives under `PREFIX/`; two stores with different prefixes share
    /// one cluster without seeing each other.
    pub prefix: String,
    /// What one etcd transaction may hold.
    pub limits: TxnLimits,
}

/// What one etcd transaction may hold: etcd refuses more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnLimits {
    /// Operations of each kind (compares, writes) in one transaction (`--max-txn-ops`).
    pub max_ops: usize,
    /// Bytes of one request (`--max-request-bytes`).
    pub max_request_bytes: usize,
}

impl Default for TxnLimits {
    fn default() -> Self {
        Self {
            max_ops: DEFAULT_MAX_TXN_OPS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// The forms `--store` accepts, for messages.
const FORMS: &str = "etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?max-txn-ops=N&max-request-bytes=B]";

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once("://") {
            Some(("etcd", rest)) => Ok(StoreLocation::Etcd(EtcdUrl::parse(rest)?)),
            Some((scheme, _)) => Err(format!(
                "unknown store scheme `{scheme}` in {text:?}: the store URL is {FORMS}; leave \
                 --store out to keep the store in --data-dir (sled)"
            )),
            None => Err(format!(
                "{text:?} is not a store URL: use {FORMS}; leave --store out to keep the store \
                 in --data-dir (sled)"
            )),
        }
    }
}

impl EtcdUrl {
    /// Parses what follows `etcd://`.
    fn parse(rest: &str) -> Result<Self, String> {
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let endpoints = hosts
            .split(',')
            .map(|host| {
                let bad = |why: &str| format!("etcd member {host:?} in etcd://{rest}: {why}");
                let (name, port) = host
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected HOST:PORT"))?;
                if name.is_empty() || name.contains(['/', '@']) {
                    return Err(bad("expected HOST:PORT"));
                }
                port.parse::<u16>()
                    .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
                Ok(format!("http://{host}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let trimmed = path.trim_end_matches('/');
        let prefix = if trimmed.is_empty() {
            DEFAULT_ETCD_PREFIX.to_string()
        } else {
            trimmed.to_string()
        };
        Ok(Self {
            endpoints,
            prefix,
            limits: parse_limits(query)?,
        })
    }

    /// The members, comma-separated, for messages.
    pub fn members(&self) -> String {
        self.endpoints.join(",")
    }
}

fn parse_limits(query: Option<&str>) -> Result<TxnLimits, String> {
    let mut limits = TxnLimits::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    format!("{name}={value:?} in the store URL is not a positive number")
                })
        };
        match name {
            "max-txn-ops" => limits.max_ops = number()?,
            "max-request-bytes" => limits.max_request_bytes = number()?,
            _ => {
                return Err(format!(
                    "unknown store URL option {name:?}: the options are max-txn-ops and \
                     max-request-bytes"
                ));
            }
        }
    }
    Ok(limits)
}

impl fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        write!(f, "etcd://{}{}", hosts.join(","), self.prefix)?;
        if self.limits != TxnLimits::default() {
            write!(
                f,
                "?max-txn-ops={}&max-request-bytes={}",
                self.limits.max_ops, self.limits.max_request_bytes
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(text: &str) -> EtcdUrl {
        match text.parse::<StoreLocation>().unwrap() {
            StoreLocation::Etcd(url) => url,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_etcd_url_names_members_a_prefix_and_limits() {
        let url = etcd("etcd://10.0.0.1:2379,etcd-2:2379/teams/a/?max-txn-ops=1000");
        assert_eq!(
            url.endpoints,
            ["http://10.0.0.1:2379", "http://etcd-2:2379"]
        );
        assert_eq!(url.prefix, "/teams/a");
        assert_eq!(url.limits.max_ops, 1000);
        assert_eq!(url.limits.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(
            url.to_string(),
            "etcd://10.0.0.1:2379,etcd-2:2379/teams/a?max-txn-ops=1000&max-request-bytes=1572864"
        );
        let plain = etcd("etcd://127.0.0.1:2379");
        assert_eq!(plain.prefix, DEFAULT_ETCD_PREFIX);
        assert_eq!(plain.limits, TxnLimits::default());
        assert_eq!(plain.to_string(), "etcd://127.0.0.1:2379/troupe");
    }

    #[test]
    fn bad_store_urls_say_what_is_wrong() {
        let err = |text: &str| text.parse::<StoreLocation>().unwrap_err();
        assert!(err("sled:///var/lib/troupe").contains("unknown store scheme `sled`"));
        assert!(err("/var/lib/troupe").contains("is not a store URL"));
        assert!(err("etcd://localhost/x").contains("expected HOST:PORT"));
        assert!(err("etcd://localhost:99999").contains("port"));
        assert!(err("etcd://a:1,:2").contains("\":2\""));
        assert!(err("etcd://a:1?max-txn-ops=0").contains("positive"));
        assert!(err("etcd://a:1?ops=3").contains("unknown store URL option"));
    }
}
