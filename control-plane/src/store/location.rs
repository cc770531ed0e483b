//! Where a server keeps its objects, as `troupe server --store` names it: sled in the data
//! directory (the default, or memory without one), or etcd. The URL is parsed here, at the
//! edge, into a [`StoreLocation`] that cannot be malformed; opening it is the server's job,
//! and etcd needs the `etcd` feature (the parsing does not).

use std::fmt;
use std::path::PathBuf;
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

/// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?OPTIONS]`: the members of one etcd cluster, the
/// key prefix the store keeps to, the transaction limits that cluster was started with
/// (etcd's defaults unless named), which the store keeps its transactions within, and how to
/// reach it: plain HTTP, or TLS when the URL names the CA to trust (`ca=`), with a client
/// certificate if it names one (`cert=` and `key=`), and as an etcd user if it names one
/// (`user=` and `password-file=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://HOST:PORT` of each member, or `https://HOST:PORT` with [`EtcdUrl::tls`].
    pub endpoints: Vec<String>,
    /// Every key of the store lives under `PREFIX/`; two stores with different prefixes share
    /// one cluster without seeing each other.
    pub prefix: String,
    /// What one etcd transaction may hold.
    pub limits: TxnLimits,
    /// TLS to the members, if the URL names a CA.
    pub tls: Option<EtcdTls>,
    /// The etcd user to authenticate as, for a cluster with auth enabled.
    pub user: Option<EtcdUser>,
}

/// An etcd user (`etcdctl auth enable`): the name, and the file holding the password, read
/// when the store opens (the URL, which is printed, never holds a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUser {
    /// `user=`: the user's name.
    pub name: String,
    /// `password-file=`: a file holding the password (a trailing newline is not part of it).
    pub password_file: PathBuf,
}

/// TLS to etcd, as the store URL names it: the files, read when the store opens (so a
/// renewed certificate is taken at the next start, and the URL, which is printed, never
/// holds a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// `ca=`: PEM of the CA (or CAs) the members' certificates are signed by.
    pub ca: PathBuf,
    /// `cert=` and `key=`: this client's certificate, for a cluster started with
    /// `--client-cert-auth`.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `cert=`: PEM of the certificate (and any intermediates after it).
    pub cert: PathBuf,
    /// `key=`: PEM of its private key.
    pub key: PathBuf,
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
const FORMS: &str = "etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?max-txn-ops=N&max-request-bytes=B\
                     &ca=CA.pem&cert=CLIENT.pem&key=CLIENT-KEY.pem&user=NAME&password-file=FILE]";

/// The options a store URL takes, for messages.
const OPTIONS: &str = "max-txn-ops, max-request-bytes, ca, cert, key, user and password-file";

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
                Ok(host)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let (limits, tls, user) = parse_options(query)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let trimmed = path.trim_end_matches('/');
        let prefix = if trimmed.is_empty() {
            DEFAULT_ETCD_PREFIX.to_string()
        } else {
            trimmed.to_string()
        };
        Ok(Self {
            endpoints: endpoints
                .into_iter()
                .map(|host| format!("{scheme}://{host}"))
                .collect(),
            prefix,
            limits,
            tls,
            user,
        })
    }

    /// The members, comma-separated, for messages.
    pub fn members(&self) -> String {
        self.endpoints.join(",")
    }
}

/// The options after `?`: the transaction limits, TLS and the user.
type Options = (TxnLimits, Option<EtcdTls>, Option<EtcdUser>);

/// Parses the options after `?`.
fn parse_options(query: Option<&str>) -> Result<Options, String> {
    let mut limits = TxnLimits::default();
    let (mut ca, mut cert, mut key, mut password_file) = (None, None, None, None);
    let mut user: Option<String> = None;
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
        let slot = match name {
            "max-txn-ops" => {
                limits.max_ops = number()?;
                continue;
            }
            "max-request-bytes" => {
                limits.max_request_bytes = number()?;
                continue;
            }
            "user" => {
                if user.is_some() {
                    return Err("user= is given twice in the store URL".to_string());
                }
                if value.is_empty() {
                    return Err("user= in the store URL names no user".to_string());
                }
                user = Some(path(name, value)?.to_string_lossy().into_owned());
                continue;
            }
            "ca" => &mut ca,
            "cert" => &mut cert,
            "key" => &mut key,
            "password-file" => &mut password_file,
            _ => {
                return Err(format!(
                    "unknown store URL option {name:?}: the options are {OPTIONS}"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("{name}= is given twice in the store URL"));
        }
        *slot = Some(path(name, value)?);
    }
    let user = match (user, password_file) {
        (Some(name), Some(password_file)) => Some(EtcdUser {
            name,
            password_file,
        }),
        (None, None) => None,
        _ => {
            return Err(
                "user= and password-file= go together in the store URL: user= names the etcd \
                 user, password-file= a file holding its password; give both, or neither"
                    .to_string(),
            );
        }
    };
    Ok((limits, tls(ca, cert, key)?, user))
}

/// The file a `name=value` option names: `%XX` escapes decoded (`%26` for `&`, `%25` for `%`).
fn path(name: &str, value: &str) -> Result<PathBuf, String> {
    let bad = || format!("{name}={value:?} in the store URL is not a file path");
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    if text.is_empty() {
        return Err(format!("{name}= in the store URL names no file"));
    }
    Ok(PathBuf::from(text))
}

/// TLS from the files the options name: none without `ca`; `cert` and `key` together, and
/// only with `ca`.
fn tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<EtcdTls>, String> {
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
        (None, None) => None,
        _ => {
            return Err(
                "cert= and key= go together in the store URL: cert= names the client \
                 certificate, key= its private key; give both, or neither"
                    .to_string(),
            );
        }
    };
    match ca {
        Some(ca) => Ok(Some(EtcdTls { ca, identity })),
        None if identity.is_some() => Err(
            "cert= and key= need ca= in the store URL: ca= names the CA that signed the etcd \
             members' certificates, and turns TLS on"
                .to_string(),
        ),
        None => Ok(None),
    }
}

/// `path` as an option value: `%` and `&` escaped, so that it parses back whole.
fn escape(path: &std::path::Path) -> String {
    path.to_string_lossy()
        .replace('%', "%25")
        .replace('&', "%26")
}

impl fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.split_once("://").map_or(e.as_str(), |(_, host)| host))
            .collect();
        write!(f, "etcd://{}{}", hosts.join(","), self.prefix)?;
        let mut options = Vec::new();
        if self.limits != TxnLimits::default() {
            options.push(format!("max-txn-ops={}", self.limits.max_ops));
            options.push(format!(
                "max-request-bytes={}",
                self.limits.max_request_bytes
            ));
        }
        if let Some(tls) = &self.tls {
            options.push(format!("ca={}", escape(&tls.ca)));
            if let Some(identity) = &tls.identity {
                options.push(format!("cert={}", escape(&identity.cert)));
                options.push(format!("key={}", escape(&identity.key)));
            }
        }
        if let Some(user) = &self.user {
            options.push(format!("user={}", escape(std::path::Path::new(&user.name))));
            options.push(format!("password-file={}", escape(&user.password_file)));
        }
        if !options.is_empty() {
            write!(f, "?{}", options.join("&"))?;
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
        assert!(err("etcd://a:1?ops=3").contains("user and password-file"));
    }

    #[test]
    fn an_etcd_url_names_a_user_and_a_password_file_and_prints_them_back() {
        let url = etcd("etcd://h:1/p?user=troupe&password-file=/run/secrets/etcd%26pw");
        let user = url.user.clone().unwrap();
        assert_eq!(user.name, "troupe");
        assert_eq!(user.password_file, PathBuf::from("/run/secrets/etcd&pw"));
        assert_eq!(etcd(&url.to_string()), url);
        assert_eq!(etcd("etcd://h:1").user, None);
        let err = |text: &str| text.parse::<StoreLocation>().unwrap_err();
        for half in ["user=troupe", "password-file=pw"] {
            let message = err(&format!("etcd://h:1?{half}"));
            assert!(message.contains("go together"), "{half}: {message}");
        }
        assert!(err("etcd://h:1?user=&password-file=pw").contains("names no user"));
        assert!(err("etcd://h:1?user=a&user=b&password-file=pw").contains("twice"));
    }

    #[test]
    fn an_etcd_url_names_tls_files_and_prints_them_back() {
        let text = "etcd://10.0.0.1:2379,etcd-2:2379/troupe?ca=/etc/troupe/etcd-ca.pem\
                    &cert=/etc/troupe/etcd-client.pem&key=/etc/troupe/etcd-client-key.pem";
        let url = etcd(text);
        assert_eq!(
            url.endpoints,
            ["https://10.0.0.1:2379", "https://etcd-2:2379"]
        );
        let tls = url.tls.clone().unwrap();
        assert_eq!(tls.ca, PathBuf::from("/etc/troupe/etcd-ca.pem"));
        let identity = tls.identity.unwrap();
        assert_eq!(identity.cert, PathBuf::from("/etc/troupe/etcd-client.pem"));
        assert_eq!(
            identity.key,
            PathBuf::from("/etc/troupe/etcd-client-key.pem")
        );
        assert_eq!(url.limits, TxnLimits::default());
        assert_eq!(url.to_string(), text);
        assert_eq!(etcd(&url.to_string()), url);

        // A CA alone: TLS, no client certificate; with limits, both print back.
        let ca_only = etcd("etcd://h:1/p?ca=ca.pem&max-txn-ops=500");
        assert_eq!(ca_only.endpoints, ["https://h:1"]);
        assert_eq!(ca_only.tls.as_ref().unwrap().identity, None);
        assert_eq!(etcd(&ca_only.to_string()), ca_only);
        assert!(ca_only.to_string().contains("ca=ca.pem"));

        // `%` and `&` in a path survive the round trip.
        let odd = etcd("etcd://h:1/p?ca=/certs/a%26b%25c.pem");
        assert_eq!(
            odd.tls.as_ref().unwrap().ca,
            PathBuf::from("/certs/a&b%c.pem")
        );
        assert_eq!(etcd(&odd.to_string()), odd);

        // Without ca, plain HTTP as before.
        assert_eq!(etcd("etcd://h:1").tls, None);
        assert_eq!(etcd("etcd://h:1").endpoints, ["http://h:1"]);
    }

    #[test]
    fn tls_options_that_cannot_work_are_refused_naming_them() {
        let err = |text: &str| text.parse::<StoreLocation>().unwrap_err();
        for half in ["ca=a&cert=c", "ca=a&key=k", "cert=c", "key=k"] {
            let message = err(&format!("etcd://h:1?{half}"));
            assert!(
                message.contains("cert= and key= go together"),
                "{half}: {message}"
            );
        }
        let message = err("etcd://h:1?cert=c&key=k");
        assert!(message.contains("need ca="), "{message}");
        assert!(err("etcd://h:1?ca=").contains("ca= in the store URL names no file"));
        assert!(err("etcd://h:1?ca=a&ca=b").contains("ca= is given twice"));
        assert!(err("etcd://h:1?ca=%zz").contains("not a file path"));
        assert!(err("etcd://h:1?ca=a&certificate=c").contains("unknown store URL option"));
    }
}
