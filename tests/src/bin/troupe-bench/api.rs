//! Connections to a server's API that carry its admin token, as every API call needs one,
//! and a server in this process to measure.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A connection that sends the token with every call.
pub(crate) type Api = InterceptedService<Channel, Bearer>;

/// `authorization: Bearer TOKEN` on every call.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Where a server's API is (plain gRPC on loopback) and the token to call it with.
#[derive(Clone)]
pub(crate) struct ApiAddr {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    bearer: Bearer,
}

impl ApiAddr {
    /// The API at `url`, called with `token`.
    pub(crate) fn new(url: String, token: &str) -> anyhow::Result<Self> {
        let bearer = Bearer(format!("Bearer {}", token.trim()).parse()?);
        Ok(Self { url, bearer })
    }

    /// A watch of every Release of namespace `acme`, from the start (large Releases allowed).
    pub(crate) async fn watch_releases(
        &self,
    ) -> anyhow::Result<tonic::Streaming<troupe_common::pb::v1alpha1::WatchResponse>> {
        self.watch(troupe_common::Kind::Release).await
    }

    /// A watch of every object of `kind` in namespace `acme`, from the start (large objects
    /// allowed).
    pub(crate) async fn watch(
        &self,
        kind: troupe_common::Kind,
    ) -> anyhow::Result<tonic::Streaming<troupe_common::pb::v1alpha1::WatchResponse>> {
        use troupe_common::pb::v1alpha1::WatchRequest;
        use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
        let request = WatchRequest {
            kind: kind.name().into(),
            namespace: "acme".into(),
            label_selector: String::new(),
            since_revision: 0,
        };
        Ok(ResourceServiceClient::new(self.connect().await?)
            .max_decoding_message_size(64 << 20)
            .watch(request)
            .await?
            .into_inner())
    }

    /// A new connection (one TCP connection each).
    pub(crate) async fn connect(&self) -> anyhow::Result<Api> {
        let channel = Channel::from_shared(self.url.clone())?.connect().await?;
        Ok(InterceptedService::new(channel, self.bearer.clone()))
    }
}

/// A `troupe server` in this process over sled in a temporary directory, serving plain gRPC
/// on loopback: the figures measure the server, not TLS.
pub(crate) struct LocalServer {
    /// Its API.
    pub(crate) api: ApiAddr,
    /// Its agent endpoint (gRPC over TLS).
    pub(crate) agents: std::net::SocketAddr,
    /// The CA agents trust the agent endpoint by, on disk.
    pub(crate) agent_ca: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl LocalServer {
    /// Starts one and waits until it serves.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        use troupe_control_plane::server::{ApiTransport, ServerConfig};
        let dir = tempfile::tempdir()?;
        let mut config = ServerConfig::local(Some(dir.path().to_path_buf()));
        config.api_transport = ApiTransport::Plaintext { insecure: false };
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(troupe_control_plane::server::run(
            config,
            async {
                let _ = stop_rx.await;
            },
            move |ready| {
                let _ = addr_tx.send(ready);
            },
        ));
        let ready = addr_rx.await?;
        Ok(Self {
            api: ApiAddr::new(format!("http://{}", ready.api), &ready.admin_token)?,
            agents: ready.agents,
            agent_ca: ready
                .ca_path
                .ok_or_else(|| anyhow::anyhow!("a server on sled keeps its CA on disk"))?,
            stop,
            task,
            _dir: dir,
        })
    }

    /// Stops it; a server that does not stop within a minute is an error, not a wait.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(60), self.task)
            .await
            .map_err(|_| anyhow::anyhow!("the server did not stop within 60 s"))??
    }
}
