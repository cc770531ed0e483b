//! What every client verb shares: which server it talks to, how (the CA to trust, the token to
//! send), the clients each verb opens on it, and how a server error is printed.
//!
//! Settings come from flags, then environment variables (`TROUPE_SERVER`, `TROUPE_CA`,
//! `TROUPE_TOKEN`, `TROUPE_CONTEXT`), then the chosen context of the config file
//! ([`super::config`]), then the default `https://127.0.0.1:50051`. A context's CA and token go
//! only to that context's server: naming another server leaves them out.
//!
//! A verb connects first, before reading its inputs, so a server that cannot be reached is
//! the error it reports whatever else is wrong.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use troupe_common::pb::v1alpha1::build_service_client::BuildServiceClient;
use troupe_common::pb::v1alpha1::promotion_service_client::PromotionServiceClient;
use troupe_common::pb::v1alpha1::release_service_client::ReleaseServiceClient;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;

use super::config::{self, Config};
use crate::auth::{IMPERSONATE_GROUP, IMPERSONATE_USER};

/// A connection to the server that sends the token with every call.
pub(super) type Connection = InterceptedService<Channel, Bearer>;

/// How long a server may take to accept the connection before the next one named is tried
/// (or, if it is the last, the verb fails).
const CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The servers a server setting names: one URL, or several comma-separated.
pub(super) fn servers(setting: &str) -> impl Iterator<Item = &str> {
    setting.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A client of the resource service.
pub(super) type Client = ResourceServiceClient<Connection>;

/// A client of the release service.
pub(super) type Releases = ReleaseServiceClient<Connection>;

/// A client of the promotion service.
pub(super) type Promoter = PromotionServiceClient<Connection>;

/// A client of the build service.
pub(super) type Builds = BuildServiceClient<Connection>;

/// Largest message the CLI accepts (large lists).
const CLIENT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The server client verbs talk to when nothing names one.
pub(super) const DEFAULT_SERVER: &str = "https://127.0.0.1:50051";

/// The connection settings given on the command line or in the environment.
#[derive(Debug, Clone, Default)]
pub(super) struct Flags {
    /// `--server` / `TROUPE_SERVER`.
    pub(super) server: Option<String>,
    /// `--ca` / `TROUPE_CA`.
    pub(super) ca: Option<PathBuf>,
    /// `--token` / `TROUPE_TOKEN`.
    pub(super) token: Option<String>,
    /// `--context` / `TROUPE_CONTEXT`.
    pub(super) context: Option<String>,
    /// `--as`: the user to impersonate.
    pub(super) as_user: Option<String>,
    /// `--as-group`: the impersonated user's groups.
    pub(super) as_groups: Vec<String>,
}

/// The server a client verb talks to, and how.
pub(super) struct Context {
    server: String,
    /// PEM of the CA to trust; `None` trusts the system's roots.
    ca: Option<String>,
    token: Option<String>,
    /// Impersonation metadata every call carries (`--as`, `--as-group`).
    impersonate: Vec<(&'static str, String)>,
}

impl Context {
    /// A context with exactly these settings (not contacted yet).
    pub(super) fn new(server: String, ca: Option<String>, token: Option<String>) -> Self {
        Self {
            server,
            ca,
            token,
            impersonate: Vec::new(),
        }
    }

    /// The settings `flags` and the config file give, flags first.
    pub(super) fn resolve(flags: Flags) -> anyhow::Result<Self> {
        let config = match config::path() {
            Some(path) => Config::load(&path)?,
            None => Config::default(),
        };
        Self::from_config(flags, &config)
    }

    /// The settings `flags` and `config` give, flags first.
    fn from_config(flags: Flags, config: &Config) -> anyhow::Result<Self> {
        let named = match &flags.context {
            Some(name) => Some(config.get(name).with_context(|| {
                format!("no context {name:?} in the CLI config (see `troupe context list`)")
            })?),
            None => config.current(),
        };
        let named = named.filter(|c| {
            flags
                .server
                .as_deref()
                .is_none_or(|s| s.trim_end_matches('/') == c.server.trim_end_matches('/'))
        });
        let server = flags
            .server
            .or_else(|| named.map(|c| c.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let ca = match (flags.ca, named) {
            (Some(path), _) => Some(config::read_ca(&path)?),
            (None, Some(named)) => named.ca_pem()?,
            (None, None) => None,
        };
        let token = flags.token.or_else(|| named.and_then(|c| c.token.clone()));
        let impersonate = flags
            .as_user
            .map(|user| (IMPERSONATE_USER, user))
            .into_iter()
            .chain(flags.as_groups.into_iter().map(|g| (IMPERSONATE_GROUP, g)))
            .collect();
        Ok(Self {
            server,
            ca,
            token,
            impersonate,
        })
    }

    /// A connection to the server: TLS for `https://` (with the CA, or the system's roots),
    /// plaintext for `http://`; every call carries the token. The server setting may name
    /// several servers of one control plane, comma-separated (replicas sharing a store): the
    /// first, in that order, that takes the connection serves the verb.
    pub(super) async fn channel(&self) -> anyhow::Result<Connection> {
        let bearer = Bearer::new(self.token.as_deref(), &self.impersonate)?;
        let mut failed = Vec::new();
        for server in servers(&self.server) {
            match self.connect(server).await {
                Ok(channel) => return Ok(InterceptedService::new(channel, bearer)),
                Err(e) => failed.push((server, e)),
            }
        }
        const HINT: &str = "set --server or TROUPE_SERVER; for https, --ca or TROUPE_CA names \
                            the CA to trust it by";
        match failed.as_slice() {
            [] => anyhow::bail!("no server named: {HINT}"),
            [(server, e)] => Err(anyhow::anyhow!("{e:#}"))
                .with_context(|| format!("cannot reach the Troupe server at {server} ({HINT})")),
            _ => {
                let each: Vec<String> = failed.iter().map(|(s, e)| format!("{s}: {e:#}")).collect();
                anyhow::bail!(
                    "cannot reach any of the Troupe servers {} ({HINT}): {}",
                    self.server,
                    each.join("; ")
                )
            }
        }
    }

    /// A connection to `server` (TCP, TLS and HTTP/2 handshakes) within [`CONNECT_WITHIN`]:
    /// a server that accepts and then says nothing (a paused process) is passed over too.
    async fn connect(&self, server: &str) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(server.to_string())
            .with_context(|| format!("invalid server address {server:?}"))?;
        if server.starts_with("https://") {
            endpoint = endpoint
                .tls_config(self.client_tls()?)
                .with_context(|| format!("TLS settings for {server}"))?;
        }
        match tokio::time::timeout(CONNECT_WITHIN, endpoint.connect()).await {
            Ok(connected) => Ok(connected?),
            Err(_) => anyhow::bail!(
                "no answer within {} s (a server paused or overloaded?)",
                CONNECT_WITHIN.as_secs()
            ),
        }
    }

    fn client_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let tls = ClientTlsConfig::new();
        Ok(match &self.ca {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.ca_certificates(system_roots()?),
        })
    }

    /// A client of the resource service.
    pub(super) async fn resources(&self) -> anyhow::Result<Client> {
        Ok(ResourceServiceClient::new(self.channel().await?)
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE_BYTES))
    }

    /// A client of the release service.
    pub(super) async fn releases(&self) -> anyhow::Result<Releases> {
        Ok(ReleaseServiceClient::new(self.channel().await?)
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES))
    }

    /// A client of the promotion service.
    pub(super) async fn promoter(&self) -> anyhow::Result<Promoter> {
        Ok(PromotionServiceClient::new(self.channel().await?))
    }

    /// A client of the build service.
    pub(super) async fn builds(&self) -> anyhow::Result<Builds> {
        Ok(BuildServiceClient::new(self.channel().await?))
    }
}

/// Sends `authorization: Bearer TOKEN` with every call (nothing without a token).
#[derive(Clone)]
pub(super) struct Bearer {
    token: Option<MetadataValue<Ascii>>,
    impersonate: Vec<(&'static str, MetadataValue<Ascii>)>,
}

impl Bearer {
    fn new(token: Option<&str>, impersonate: &[(&'static str, String)]) -> anyhow::Result<Self> {
        let token = token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .context("the token is not printable ASCII")
            })
            .transpose()?;
        let impersonate = impersonate
            .iter()
            .map(|(key, name)| {
                let value = name.parse().with_context(|| {
                    format!("--as / --as-group {name:?} is not printable ASCII")
                })?;
                Ok((*key, value))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { token, impersonate })
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        if let Some(value) = &self.token {
            metadata.insert("authorization", value.clone());
        }
        for (key, value) in &self.impersonate {
            metadata.append(*key, value.clone());
        }
        Ok(request)
    }
}

/// The system's trusted CAs, for an https server with no CA configured.
fn system_roots() -> anyhow::Result<Vec<Certificate>> {
    let found = rustls_native_certs::load_native_certs();
    anyhow::ensure!(
        !found.certs.is_empty(),
        "no CA to trust the server by: the system has no trusted certificates \
         (give --ca FILE or TROUPE_CA){}",
        found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    Ok(found
        .certs
        .iter()
        .map(|der| Certificate::from_pem(to_pem(der)))
        .collect())
}

/// A DER certificate as PEM, the form tonic reads.
fn to_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A server error as the CLI prints it: the server's own message.
pub(super) fn server_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::config::NamedContext;

    fn mk_config() -> Config {
        Config {
            current_context: Some("prod".into()),
            contexts: vec![
                NamedContext {
                    name: "prod".into(),
                    server: "https://prod.example:50051".into(),
                    ca: None,
                    token: Some("prod-token".into()),
                },
                NamedContext {
                    name: "dev".into(),
                    server: "http://127.0.0.1:50051".into(),
                    ca: None,
                    token: Some("dev-token".into()),
                },
            ],
        }
    }

    fn mk_flags(server: Option<&str>, token: Option<&str>, context: Option<&str>) -> Flags {
        Flags {
            server: server.map(Into::into),
            ca: None,
            token: token.map(Into::into),
            context: context.map(Into::into),
            ..Flags::default()
        }
    }

    fn resolved(flags: Flags, config: &Config) -> (String, Option<String>) {
        let ctx = Context::from_config(flags, config).unwrap();
        (ctx.server, ctx.token)
    }

    #[test]
    fn flags_win_and_a_contexts_token_goes_only_to_its_server() {
        let config = mk_config();
        let prod = || "https://prod.example:50051".to_string();
        let none = mk_flags(None, None, None);
        assert_eq!(resolved(none, &config), (prod(), Some("prod-token".into())));
        let same_server = mk_flags(Some("https://prod.example:50051/"), None, None);
        assert_eq!(
            resolved(same_server, &config),
            (prod() + "/", Some("prod-token".into()))
        );
        let own_token = mk_flags(None, Some("mine"), None);
        assert_eq!(resolved(own_token, &config), (prod(), Some("mine".into())));
        let elsewhere = mk_flags(Some("https://evil.example:443"), None, None);
        assert_eq!(
            resolved(elsewhere, &config),
            ("https://evil.example:443".into(), None)
        );
        let named = mk_flags(None, None, Some("dev"));
        assert_eq!(
            resolved(named, &config),
            ("http://127.0.0.1:50051".into(), Some("dev-token".into()))
        );
        let nothing = resolved(mk_flags(None, None, None), &Config::default());
        assert_eq!(nothing, (DEFAULT_SERVER.to_string(), None));
        let unknown = Context::from_config(mk_flags(None, None, Some("nope")), &config);
        let err = format!("{:#}", unknown.err().unwrap());
        assert!(err.contains("no context \"nope\""), "{err}");
    }

    #[test]
    fn the_token_goes_with_every_call_as_a_bearer() {
        let mut bearer = Bearer::new(Some(" secret\n"), &[]).unwrap();
        let request = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer secret"
        );
        let mut none = Bearer::new(None, &[]).unwrap();
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert!(Bearer::new(Some("bad\u{7f}token"), &[]).is_err());
    }

    #[test]
    fn as_and_as_group_go_with_every_call_as_impersonation_metadata() {
        let flags = Flags {
            as_user: Some("alice".into()),
            as_groups: vec!["shop-team".into(), "oncall".into()],
            ..mk_flags(Some("https://h:1"), Some("t"), None)
        };
        let ctx = Context::from_config(flags, &Config::default()).unwrap();
        let mut bearer = Bearer::new(ctx.token.as_deref(), &ctx.impersonate).unwrap();
        let request = bearer.call(tonic::Request::new(())).unwrap();
        let metadata = request.metadata();
        assert_eq!(metadata.get(IMPERSONATE_USER).unwrap(), "alice");
        let groups: Vec<_> = metadata.get_all(IMPERSONATE_GROUP).iter().collect();
        assert_eq!(groups, ["shop-team", "oncall"]);
    }
}
