//! The daemon's HTTP endpoints: `/metrics` (OpenMetrics text), `/findings` (JSON), `/healthz`
//! and `/readyz`. They serve what the last report rendered, so a scrape costs a copy, never a
//! pass over the tracer's state, and cannot stall the event loop it shares a thread with.
//! Connections are bounded in number and in how long their request headers may take.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints serve: the last report, rendered.
#[derive(Debug, Default)]
pub struct Exposition {
    pub metrics: Bytes,
    pub findings: Bytes,
    /// Probes attached and a first report rendered.
    pub ready: bool,
}

pub type Shared = Arc<Mutex<Exposition>>;

/// Serves the endpoints until the runtime stops.
pub fn spawn(listener: TcpListener, shared: Shared) {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            // Accept errors (fd limit, a reset connection) pass; the next accept may succeed.
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = respond(&req, &shared);
                    async move { Ok::<_, Infallible>(response) }
                });
                // A client that goes away mid-request is its own problem.
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(permit);
            });
        }
    });
}

fn respond(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let reply = |status: u16, kind: &str, body: Bytes| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, kind)
            .body(Full::new(body))
            .expect("a valid status and header")
    };
    let text = "text/plain; charset=utf-8";
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(405, text, Bytes::from_static(b"only GET\n"));
    }
    let exposition = shared.lock().unwrap_or_else(|e| e.into_inner());
    match req.uri().path() {
        "/healthz" => reply(200, text, Bytes::from_static(b"ok\n")),
        "/readyz" if exposition.ready => reply(200, text, Bytes::from_static(b"ready\n")),
        "/readyz" => reply(503, text, Bytes::from_static(b"not ready: no report yet\n")),
        "/metrics" if exposition.ready => reply(200, OPENMETRICS, exposition.metrics.clone()),
        "/findings" if exposition.ready => {
            reply(200, "application/json", exposition.findings.clone())
        }
        "/metrics" | "/findings" => reply(503, text, Bytes::from_static(b"no report yet\n")),
        _ => reply(
            404,
            text,
            Bytes::from_static(b"not found: /metrics, /findings, /healthz, /readyz\n"),
        ),
    }
}
