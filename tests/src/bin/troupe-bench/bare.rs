//! The floor of any server in front of etcd: a gRPC server whose Apply does nothing but write
//! the resource it is given to etcd, in one transaction of the shape the store's take (the
//! key checked, then put), and answer once etcd has. No validation, no store, no watch: what
//! one more hop between client and etcd costs, measured beside a real server and raw puts.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp};
use prost::Message;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::resource_service_server::{
    ResourceService, ResourceServiceServer,
};
use troupe_control_plane::store::{EtcdUrl, connect_etcd};

/// A bare server on a port of its own; it stops with the bench.
pub struct Bare {
    pub url: String,
}

impl Bare {
    /// Starts one that writes under `url`'s prefix.
    pub async fn start(url: &EtcdUrl) -> anyhow::Result<Self> {
        let kv = connect_etcd(url).await?.kv_client();
        let service = BareApi {
            kv,
            prefix: url.prefix.clone(),
            next: AtomicU64::new(0),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ResourceServiceServer::new(service))
                .serve_with_incoming(incoming),
        );
        Ok(Self {
            url: format!("http://{addr}"),
        })
    }
}

struct BareApi {
    kv: KvClient,
    prefix: String,
    /// Numbers the keys: every Apply creates one, as the bench's do.
    next: AtomicU64,
}

type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

fn unsupported<T>() -> Result<T, Status> {
    Err(Status::unimplemented("the bare server takes Apply only"))
}

#[tonic::async_trait]
impl ResourceService for BareApi {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let resource = request.into_inner().resource.unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}/{n:012}", self.prefix);
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, resource.encode_to_vec(), None)]);
        let answer = self
            .kv
            .clone()
            .txn(txn)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if !answer.succeeded() {
            return Err(Status::aborted("the key exists"));
        }
        Ok(Response::new(pb::ApplyResponse::default()))
    }

    async fn get(&self, _: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        unsupported()
    }

    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        unsupported()
    }

    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        unsupported()
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        unsupported()
    }
}
