//! Counting gRPC calls: a tower layer on the tonic servers that sees every call's path and
//! its final status, in the response headers (an error before any message) or in the
//! trailers at the end of the body (everything else, streams included).
//!
//! Labels are `&'static str`s, so counting a call allocates nothing: a path is looked up in
//! the routes seen before, and a new one is interned once it is answered with anything but
//! `UNIMPLEMENTED`, so only methods that exist get a series and a client sending made-up
//! paths cannot grow the table.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use troupe_agent::metrics::latency_histogram;

/// Routes interned at most; later new paths count as `unknown`.
const MAX_ROUTES: usize = 512;

/// The names of the gRPC status codes, by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: &str = CODES[1];
const UNKNOWN: &str = CODES[2];
const UNIMPLEMENTED: &str = CODES[12];

/// One method: `troupe.v1alpha1.ResourceService` and `Get`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    service: &'static str,
    method: &'static str,
}

const UNKNOWN_ROUTE: Route = Route {
    service: "unknown",
    method: "unknown",
};

/// One method and the code it answered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handled {
    service: &'static str,
    method: &'static str,
    code: &'static str,
}

/// The gRPC figures, shared by every server the layer is on.
#[derive(Debug)]
pub struct GrpcMetrics {
    handled: Family<Handled, Counter>,
    seconds: Family<Route, Histogram, fn() -> Histogram>,
    open: Gauge,
    routes: RwLock<HashMap<Box<str>, Route>>,
}

impl GrpcMetrics {
    /// Registers the figures in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let this = Arc::new(Self {
            handled: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            open: Gauge::default(),
            routes: RwLock::default(),
        });
        registry.register(
            "troupe_grpc_server_handled",
            "gRPC calls finished, by service, method and status code",
            this.handled.clone(),
        );
        registry.register(
            "troupe_grpc_server_handling_seconds",
            "Time from a gRPC call's arrival to its status (the whole stream, for streams)",
            this.seconds.clone(),
        );
        registry.register(
            "troupe_grpc_server_calls_open",
            "gRPC calls being answered: unary calls in progress and open streams",
            this.open.clone(),
        );
        this
    }

    /// The route of `path` if it was seen before.
    fn known(&self, path: &str) -> Option<Route> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes.get(path).copied()
    }

    /// The route of `path`, interned unless it names no method (the call was not
    /// implemented), the path is not `/SERVICE/METHOD`, or the table is full.
    fn intern(&self, path: &str, code: &'static str) -> Route {
        if let Some(route) = self.known(path) {
            return route;
        }
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return UNKNOWN_ROUTE;
        };
        if code == UNIMPLEMENTED || method.contains('/') {
            return UNKNOWN_ROUTE;
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if routes.len() >= MAX_ROUTES {
            return UNKNOWN_ROUTE;
        }
        // Leaked once per method the servers implement: a bounded set.
        let route = Route {
            service: Box::leak(service.into()),
            method: Box::leak(method.into()),
        };
        *routes.entry(path.into()).or_insert(route)
    }

    fn record(&self, call: &Call, code: &'static str) {
        let route = match &call.route {
            Ok(route) => *route,
            Err(uri) => self.intern(uri.path(), code),
        };
        let seconds = call.started.elapsed().as_secs_f64();
        self.seconds.get_or_create(&route).observe(seconds);
        let handled = Handled {
            service: route.service,
            method: route.method,
            code,
        };
        self.handled.get_or_create(&handled).inc();
    }
}

/// The status code a `grpc-status` value names.
fn code_of(value: Option<&http::HeaderValue>) -> Option<&'static str> {
    let number: usize = value?.to_str().ok()?.parse().ok()?;
    Some(CODES.get(number).copied().unwrap_or(UNKNOWN))
}

/// Adds [`GrpcMetrics`] to every call of the service it wraps.
#[derive(Debug, Clone)]
pub struct GrpcLayer(pub(super) Arc<GrpcMetrics>);

impl<S> tower_layer::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose calls are counted; see [`GrpcLayer`].
#[derive(Debug, Clone)]
pub struct GrpcService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

/// One call being answered; counted open until it is dropped, whether it finished, failed
/// or its client went away.
struct Call {
    /// The route, or the URI of a path not seen before.
    route: Result<Route, http::Uri>,
    started: Instant,
    open: Gauge,
}

impl Drop for Call {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call {
            route: self
                .metrics
                .known(request.uri().path())
                .ok_or_else(|| request.uri().clone()),
            started: Instant::now(),
            open: self.metrics.open.clone(),
        };
        call.open.inc();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut pending = Some((metrics, call));
            // An error before any message comes as headers only ("trailers-only").
            if let Some(code) = code_of(response.headers().get("grpc-status"))
                && let Some((metrics, call)) = pending.take()
            {
                metrics.record(&call, code);
            }
            Ok(response.map(|body| MeteredBody { body, pending }))
        })
    }
}

/// A response body that records its call's status when the trailers carry it, when it ends
/// without one (`UNKNOWN`), or when it is dropped unfinished (`CANCELLED`: the client went
/// away).
pub struct MeteredBody<B> {
    body: B,
    pending: Option<(Arc<GrpcMetrics>, Call)>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: &'static str) {
        if let Some((metrics, call)) = self.pending.take() {
            metrics.record(&call, code);
        }
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame
                    .trailers_ref()
                    .and_then(|t| code_of(t.get("grpc-status")))
                {
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(UNKNOWN),
            Poll::Ready(None) => self.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_real_methods_are_interned_once_and_made_up_ones_never() {
        let metrics = GrpcMetrics::register(&mut Registry::default());
        let path = "/troupe.v1alpha1.ResourceService/Get";
        let route = metrics.intern(path, "NOT_FOUND");
        assert_eq!(
            (route.service, route.method),
            ("troupe.v1alpha1.ResourceService", "Get")
        );
        assert_eq!(metrics.known(path), Some(route));
        assert_eq!(
            metrics.intern("/x.Nope/Nothing", UNIMPLEMENTED),
            UNKNOWN_ROUTE
        );
        assert_eq!(metrics.known("/x.Nope/Nothing"), None);
        assert_eq!(metrics.intern("/no-method", "OK"), UNKNOWN_ROUTE);
        assert_eq!(metrics.intern("/a/b/c", "OK"), UNKNOWN_ROUTE);
    }

    #[test]
    fn status_codes_are_named_by_number() {
        let code = |v: &'static str| code_of(Some(&http::HeaderValue::from_static(v)));
        assert_eq!(code("0"), Some("OK"));
        assert_eq!(code("5"), Some("NOT_FOUND"));
        assert_eq!(code("16"), Some("UNAUTHENTICATED"));
        assert_eq!(code("99"), Some(UNKNOWN));
        assert_eq!(code("x"), None);
        assert_eq!(code_of(None), None);
    }
}
