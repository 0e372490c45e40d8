//! Wires the collector together: storage, the query engine, and the four listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_schemas::genai::{NormalizeConfig, Normalizer};

use crate::auth::{Auth, AuthConfig};
use crate::query::sql_http::{self, QueryHttpState};
use crate::query::{QueryConfig, QueryEngine};
use crate::receive::scrape::{self, ScrapeConfigError, ScrapeJob};
use crate::receive::{Ingest, ReceiverLimits, otlp_grpc, otlp_http};
use crate::storage::{StorageConfig, Store, StoreError};
use crate::telemetry::Telemetry;
use crate::tls::{Tls, TlsConfig};

/// Everything `vigil serve` can be told, from the TOML file, `VIGIL_*` variables or flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// OTLP/gRPC listen address.
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http_addr: SocketAddr,
    /// Query port: SQL over HTTP, health, vigil's own metrics.
    pub query_addr: SocketAddr,
    /// Arrow Flight SQL (gRPC): ADBC, pyarrow, Grafana's Flight SQL clients, `vigil tui`.
    pub flight_sql_addr: SocketAddr,
    /// Storage: data directory, WAL, flushing, memory, retention.
    pub storage: StorageConfig,
    /// GenAI normalization: message content policy and price overrides.
    pub normalize: NormalizeConfig,
    /// Request size limits and pushback.
    pub limits: ReceiverLimits,
    /// What one SQL query may cost.
    pub query: QueryConfig,
    /// Bearer tokens for the doors; none means open.
    pub auth: AuthConfig,
    /// A certificate and key: TLS on every listener.
    pub tls: TlsConfig,
    /// `/metrics` pages to scrape (`[[scrape]]`).
    pub scrape: Vec<ScrapeJob>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            otlp_grpc_addr: SocketAddr::from(([127, 0, 0, 1], 4317)),
            otlp_http_addr: SocketAddr::from(([127, 0, 0, 1], 4318)),
            query_addr: SocketAddr::from(([127, 0, 0, 1], 9470)),
            flight_sql_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            storage: StorageConfig::default(),
            normalize: NormalizeConfig::default(),
            limits: ReceiverLimits::default(),
            query: QueryConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            scrape: Vec::new(),
        }
    }
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not open storage: {0}")]
    Storage(#[from] StoreError),
    #[error("could not listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("could not set up the query engine: {0}")]
    Query(#[from] crate::query::QueryError),
    #[error("auth: {0}")]
    Auth(String),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Scrape(#[from] ScrapeConfigError),
}

/// A running collector.
pub struct RunningCollector {
    /// Where each listener is bound (the real port when 0 was asked for).
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub query_addr: SocketAddr,
    pub flight_sql_addr: SocketAddr,
    /// The query engine, for in-process readers.
    pub engine: QueryEngine,
    /// The storage engine.
    pub store: Arc<Store>,
    /// The counters on `/metrics`; other parts of the process add their own families here.
    pub telemetry: Arc<Telemetry>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: JoinHandle<()>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serves `router` on `listener`, through TLS when there is a certificate, until `shutdown`.
async fn serve_http(
    what: &'static str,
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let served = match tls {
        Some(tls) => {
            axum::serve(tls.listener(listener), router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            use axum::serve::ListenerExt;
            axum::serve(listener.tap_io(set_nodelay), router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "{what} server failed");
    }
}

/// Nagle's algorithm held each small response (a Flight SQL reply, an OTLP acknowledgement)
/// until the client's delayed ACK: ~40 ms a round trip, the floor under every dashboard refresh.
pub(crate) fn set_nodelay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// The accepted connections of a listener for tonic, which sets no socket option on them itself.
pub(crate) fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.map(|mut stream| {
            set_nodelay(&mut stream);
            stream
        })
    })
}

/// Opens storage (replaying the WAL), binds every listener and starts serving.
pub async fn start(config: CollectorConfig) -> Result<RunningCollector, ServerError> {
    let auth = Auth::new(&config.auth).map_err(ServerError::Auth)?;
    let tls = Tls::load(&config.tls).map_err(ServerError::Tls)?;
    let telemetry = Arc::new(Telemetry::default());
    let store = Store::open(config.storage.clone(), telemetry.clone())?;
    let engine = QueryEngine::new(store.clone(), config.query.clone())?;
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        Normalizer::new(&config.normalize),
        telemetry.clone(),
        config.limits.clone(),
    ));
    let grpc_listener = bind("OTLP/gRPC", config.otlp_grpc_addr).await?;
    let http_listener = bind("OTLP/HTTP", config.otlp_http_addr).await?;
    let query_listener = bind("query", config.query_addr).await?;
    let flight_listener = bind("Flight SQL", config.flight_sql_addr).await?;
    let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let otlp_grpc_addr = local(&grpc_listener, config.otlp_grpc_addr);
    let otlp_http_addr = local(&http_listener, config.otlp_http_addr);
    let query_addr = local(&query_listener, config.query_addr);
    let flight_sql_addr = local(&flight_listener, config.flight_sql_addr);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();

    let rx = shutdown_rx.clone();
    let grpc_ingest = ingest.clone();
    let grpc_auth = auth.clone();
    let grpc_tls = tls.clone();
    servers.push(tokio::spawn(async move {
        let grpc_tls = grpc_tls.as_ref().map(Tls::tonic);
        if let Err(e) =
            otlp_grpc::serve(grpc_ingest, grpc_auth, grpc_tls, grpc_listener, until(rx)).await
        {
            tracing::error!(error = %e, "OTLP/gRPC server failed");
        }
    }));
    let rx = shutdown_rx.clone();
    let http_router = otlp_http::router(ingest.clone(), auth.clone());
    servers.push(tokio::spawn(serve_http(
        "OTLP/HTTP",
        http_listener,
        http_router,
        tls.clone(),
        until(rx),
    )));
    let rx = shutdown_rx.clone();
    let query_router = sql_http::router(QueryHttpState {
        engine: engine.clone(),
        store: store.clone(),
        telemetry: telemetry.clone(),
        ready: ready.clone(),
        listen: query_addr,
        auth: auth.clone(),
    });
    servers.push(tokio::spawn(serve_http(
        "query",
        query_listener,
        query_router,
        tls.clone(),
        until(rx),
    )));
    let rx = shutdown_rx.clone();
    let flight = crate::query::flight_sql::service(engine.clone(), auth.clone());
    let flight_tls = tls.as_ref().map(Tls::tonic);
    servers.push(tokio::spawn(async move {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = flight_tls {
            builder = match builder.tls_config(tls) {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::error!(error = %e, "Flight SQL server cannot use the TLS certificate");
                    return;
                }
            };
        }
        if let Err(e) = builder
            .add_service(flight)
            .serve_with_incoming_shutdown(incoming(flight_listener), until(rx))
            .await
        {
            tracing::error!(error = %e, "Flight SQL server failed");
        }
    }));
    servers.extend(scrape::start(
        &config.scrape,
        ingest.clone(),
        shutdown_rx.clone(),
    )?);
    let background = tokio::spawn(store.clone().run_background(shutdown_rx));
    ready.store(true, Ordering::Release);
    auth.log_state();
    if tls.is_none() {
        tracing::info!("no [tls] certificate: every listener speaks plain TCP");
    }
    tracing::info!(%otlp_grpc_addr, %otlp_http_addr, %query_addr, %flight_sql_addr, data_dir = %store.config().data_dir.display(), "vigil collector ready");
    Ok(RunningCollector {
        otlp_grpc_addr,
        otlp_http_addr,
        query_addr,
        flight_sql_addr,
        engine,
        store,
        telemetry,
        shutdown,
        servers,
        background,
    })
}

impl RunningCollector {
    /// Stops accepting requests, lets those in flight finish, and flushes buffers to Parquet.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        let _ = self.background.await;
    }
}
