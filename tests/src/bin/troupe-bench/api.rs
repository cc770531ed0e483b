//! Connections to a server's API that carry its admin token, as every API call needs one.

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

    /// A new connection (one TCP connection each).
    pub(crate) async fn connect(&self) -> anyhow::Result<Api> {
        let channel = Channel::from_shared(self.url.clone())?.connect().await?;
        Ok(InterceptedService::new(channel, self.bearer.clone()))
    }
}
