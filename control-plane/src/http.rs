//! The plain HTTP endpoints beside the gRPC ones (metrics, the push webhook): one way to
//! serve a router on an optional address until the server stops.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Serves `router` on `listen`, if given, until `stopping` turns true; returns the bound
/// address (port 0 picks a free one). `what` names the endpoint in the log if it fails.
pub async fn serve(
    listen: Option<SocketAddr>,
    router: axum::Router,
    stopping: &tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> std::io::Result<Option<SocketAddr>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut stopping = stopping.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, endpoint = what, "an HTTP endpoint stopped");
        }
    });
    Ok(Some(addr))
}
