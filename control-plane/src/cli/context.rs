//! What every client verb shares: the server address (`--server`, or `TROUPE_SERVER`), the
//! clients each verb opens on it, and how a server error is printed.
//!
//! A verb connects first, before reading its inputs, so a server that cannot be reached is
//! the error it reports whatever else is wrong.

use anyhow::Context as _;
use tonic::transport::{Channel, Endpoint};
use troupe_common::pb::v1alpha1::promotion_service_client::PromotionServiceClient;
use troupe_common::pb::v1alpha1::release_service_client::ReleaseServiceClient;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;

/// A client of the resource service.
pub(super) type Client = ResourceServiceClient<Channel>;

/// A client of the release service.
pub(super) type Releases = ReleaseServiceClient<Channel>;

/// A client of the promotion service.
pub(super) type Promoter = PromotionServiceClient<Channel>;

/// Largest message the CLI accepts (large lists).
const CLIENT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The server a client verb talks to.
pub(super) struct Context {
    server: String,
}

impl Context {
    /// A context for the server at `server` (not contacted yet).
    pub(super) fn new(server: String) -> Self {
        Self { server }
    }

    /// A connection to the server.
    pub(super) async fn channel(&self) -> anyhow::Result<Channel> {
        let server = &self.server;
        Endpoint::from_shared(server.to_string())
            .with_context(|| format!("invalid server address {server:?}"))?
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the Troupe server at {server} (set --server or TROUPE_SERVER)"
                )
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
}

/// A server error as the CLI prints it: the server's own message.
pub(super) fn server_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}
