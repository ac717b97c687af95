//! `testbot serve`: the HTTP server, its background tasks and its shutdown.
//!
//! The server owns no state of its own beyond wake-up signals: everything a
//! client was told lives in the [`store`]. Handlers are async; every store
//! call runs on tokio's blocking pool so SQLite never stalls the runtime.

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod checks;
mod connections;
pub(crate) mod db_lock;
pub mod error;
pub mod explain;
mod extract;
mod http1;
pub mod job_token;
pub mod metrics;
pub mod pages;
pub mod queue;
pub mod store;
pub mod store_calls;
pub mod store_health;
mod tls_listener;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use self::error::ApiResult;
use self::store::{PgStore, SqliteStore, Store};
use crate::time::now_ms;

/// What every handler shares: one pointer, cloned for every request and
/// every layer it passes (one count to bump, not one per field).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    pub store: Arc<dyn Store>,
    /// Bumped whenever a job may have become claimable (submitted, put
    /// back in the queue), waking the claim long-polls.
    pub queue: Arc<watch::Sender<u64>>,
    /// Bumped whenever a log grows or a job ends, waking log followers.
    pub events: Arc<watch::Sender<u64>>,
    /// Bumped whenever a job starts, ends or goes back to the queue,
    /// waking the waits of `POST /api/v1/jobs/wait`.
    pub changes: Arc<watch::Sender<u64>>,
    /// Bumped whenever a running job is canceled, waking heartbeats held
    /// open by busy workers.
    pub cancels: Arc<watch::Sender<u64>>,
    pub auth: Arc<auth::Auth>,
    /// Signs and checks the tokens of jobs' own calls.
    pub job_tokens: Arc<job_token::JobTokens>,
    /// Where artifact bytes go, and the caps.
    pub artifacts: Arc<artifacts::ArtifactStore>,
    pub metrics: Arc<metrics::Metrics>,
    /// Becomes true once, when the server starts shutting down, so that
    /// long-polls and log followers end instead of holding shutdown up.
    pub shutdown: watch::Receiver<bool>,
    /// Served over TLS: the pages' cookies are marked `Secure`.
    pub https: bool,
    /// Where store calls run (see [`store_calls`]).
    pub calls: store_calls::StoreCalls,
}

impl AppState {
    /// Runs one store operation on the blocking pool.
    pub async fn db<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> store::StoreResult<T> + Send + 'static,
    {
        self.calls.pool(&self.store, f).await
    }

    /// A short store call on the path of every job (a claim, a result, a
    /// heartbeat): in place on the async thread when that is free, else on
    /// the blocking pool (see [`store_calls`]).
    pub async fn db_quick<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> store::StoreResult<T> + Send + 'static,
    {
        self.calls.quick(&self.store, f).await
    }

    /// [`AppState::db_quick`] when `short` (the caller knows the work is
    /// small: a few jobs, a result without a long report), else
    /// [`AppState::db`].
    pub async fn db_short_if<T, F>(&self, short: bool, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> store::StoreResult<T> + Send + 'static,
    {
        if short {
            self.db_quick(f).await
        } else {
            self.db(f).await
        }
    }

    pub fn wake_claims(&self) {
        self.queue.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn wake_followers(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A job started, ended or went back to the queue: wakes its log's
    /// followers and the waits.
    pub fn job_changed(&self) {
        self.wake_followers();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

pub struct ServeOptions {
    pub listen: String,
    /// A SQLite path (or `sqlite:PATH`) or a `postgres://` URL.
    pub db: String,
    /// Worker configs to run inside this process against this server.
    pub workers: Vec<PathBuf>,
    pub token: Option<String>,
    /// Log bytes kept per attempt.
    pub log_cap: u64,
    pub worker_tokens: Option<PathBuf>,
    pub client_tokens: Option<PathBuf>,
    /// Reads need a token too.
    pub private: bool,
    /// Listen beyond loopback without tokens.
    pub insecure: bool,
    /// Finished jobs older than this are deleted, with their logs.
    pub keep: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Serve https with this PEM certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where artifacts are kept (default: beside a SQLite database).
    pub artifacts_dir: Option<PathBuf>,
    /// The largest artifact file kept, and the most bytes per attempt.
    pub artifact_max_file: u64,
    pub artifact_max_job: u64,
}

/// The whole HTTP surface: API and pages behind the auth layer, with any
/// panic in a handler caught, logged and answered 500.
pub fn app(state: AppState) -> axum::Router {
    api::router()
        .merge(pages::router())
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            checked_and_counted,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

/// Every routed request passes this one layer: the auth check, then the
/// count for `/metrics` (refusals included). One layer rather than two:
/// each `from_fn` layer boxes the request's future, and a held claim keeps
/// those boxes for as long as it is held, 10,000 of them with 10,000
/// workers.
async fn checked_and_counted(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (route, method) = metrics::request_labels(&req);
    let resp = auth::layer(axum::extract::State(st.clone()), req, next).await;
    st.metrics
        .count_request(route, method, resp.status().as_u16());
    resp
}

/// A known path asked with a method it does not take: JSON like every
/// other error, naming the method and the path.
async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if pages::is_browser(uri.path(), &headers) {
        return pages::error_page(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} does not take {method}", uri.path()),
        );
    }
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(crate::wire::ErrorBody {
            error: format!("{} does not take {method}", uri.path()),
        }),
    )
        .into_response()
}

/// What a panicking handler answers: logged, 500, the server serves on.
fn panic_response(panic: Box<dyn std::any::Any + Send>) -> axum::response::Response {
    log_panic(panic);
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(crate::wire::ErrorBody {
            error: "internal server error; see the server's log".into(),
        }),
    )
        .into_response()
}

/// The same for a page: an HTML page.
pub(crate) fn page_panic_response(
    panic: Box<dyn std::any::Any + Send>,
) -> axum::response::Response {
    log_panic(panic);
    pages::error_page(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "the server failed to make this page; its log says why",
    )
}

fn log_panic(panic: Box<dyn std::any::Any + Send>) {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!("a handler panicked: {what}");
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    // Check the embedded workers' configs before anything listens, so a
    // broken config is reported like `testbot worker` would (exit 2).
    let worker_configs = opts
        .workers
        .iter()
        .map(|p| crate::worker::config::Config::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let auth = auth::Auth::new(
        opts.worker_tokens.clone(),
        opts.client_tokens.clone(),
        opts.private,
        opts.insecure,
    )?;
    check_exposure(&opts.listen, auth.enabled(), opts.insecure)?;
    let tls = match &opts.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let max_connections = connections::raise_fd_limit();
    // Store calls share one SQLite connection behind a mutex, so a few
    // blocking threads do as much as many; more would only cost memory
    // when thousands of workers call at once.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // Half the cores answer requests (TOKIO_WORKER_THREADS overrides it).
    // The store's work runs on the blocking threads, so requests need few
    // threads; and each one more costs a wake-up and a sleep of another
    // thread for every burst of requests when the server is not busy.
    // Measured on 2 cores with 10,000 idle workers: 13 % of a core with
    // one thread, 21 % with two; claims and submits were faster too.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        runtime.worker_threads((cores / 2).max(1));
    }
    let runtime = runtime
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .context("cannot start the async runtime")?;
    // Listen before the database is touched: a taken port leaves no
    // database file behind.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&opts.listen))
        .map_err(|e| crate::cmd::Exit(2, format!("cannot listen on {}: {e}", opts.listen)))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let database = Database::parse(&opts.db);
    let artifacts_dir = opts
        .artifacts_dir
        .clone()
        .unwrap_or_else(|| database.default_artifacts_dir());
    let blobs = artifacts::DirBlobs::open(&artifacts_dir)?;
    let artifact_store = Arc::new(artifacts::ArtifactStore {
        blobs: Box::new(blobs),
        max_file: opts.artifact_max_file,
        max_job: opts.artifact_max_job,
        dir: artifacts_dir,
    });
    let (store, _db_lock): (Arc<dyn Store>, _) = match database {
        Database::Postgres(db_url) => (
            Arc::new(PgStore::open(&db_url)?.with_log_cap(opts.log_cap)),
            None,
        ),
        Database::Sqlite(path) => {
            let lock = db_lock::take(&path, &url)?;
            let store = SqliteStore::open(&path)?.with_log_cap(opts.log_cap);
            (Arc::new(store), Some(lock))
        }
    };
    runtime.block_on(run(
        opts,
        listener,
        (store, artifact_store),
        auth,
        tls,
        worker_configs,
        max_connections,
    ))
}

/// Where `serve --db` keeps the state.
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    pub fn parse(db: &str) -> Database {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Database::Postgres(db.to_string())
        } else {
            Database::Sqlite(PathBuf::from(db.strip_prefix("sqlite:").unwrap_or(db)))
        }
    }

    /// As it may be logged: a URL without its password.
    /// Where artifact files are kept when `--artifacts-dir` does not say.
    pub fn default_artifacts_dir(&self) -> PathBuf {
        artifacts::default_dir(match self {
            Database::Sqlite(p) => Some(p.as_path()),
            Database::Postgres(_) => None,
        })
    }

    pub fn shown(db: &str) -> String {
        match Database::parse(db) {
            Database::Postgres(url) => store::postgres::redact(&url),
            Database::Sqlite(path) => path.display().to_string(),
        }
    }
}

/// Without tokens anyone who can connect may run jobs on the fleet, so an
/// open server listens on loopback only unless told `--insecure`.
fn check_exposure(listen: &str, tokens: bool, insecure: bool) -> anyhow::Result<()> {
    if tokens || insecure {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .with_context(|| format!("cannot resolve the listen address {listen}"))?
        .collect();
    if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(crate::cmd::Exit(
            2,
            format!(
                "refusing to listen on {a} without tokens: anyone who reaches it could run \
                 commands on your workers. Give --worker-tokens and --client-tokens, listen on \
                 127.0.0.1, or pass --insecure if the network is yours alone"
            ),
        )
        .into());
    }
    Ok(())
}

async fn run(
    opts: ServeOptions,
    listener: tokio::net::TcpListener,
    (store, artifacts): (Arc<dyn Store>, Arc<artifacts::ArtifactStore>),
    auth: auth::Auth,
    tls: Option<Arc<rustls::ServerConfig>>,
    worker_configs: Vec<crate::worker::config::Config>,
    max_connections: usize,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let fresh = job_token::JobTokens::fresh_key()?;
    let key = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.job_token_key(&fresh))
            .await
            .context("reading the job token key")??
    };
    let state = AppState(Arc::new(Shared {
        job_tokens: Arc::new(job_token::JobTokens::new(key.as_bytes())),
        artifacts,
        store,
        queue: Arc::new(watch::channel(0).0),
        events: Arc::new(watch::channel(0).0),
        changes: Arc::new(watch::channel(0).0),
        cancels: Arc::new(watch::channel(0).0),
        auth: Arc::new(auth),
        metrics: Arc::default(),
        shutdown: shutdown_rx,
        https: tls.is_some(),
        calls: Default::default(),
    }));
    tokio::spawn(reload_tokens_on_hup(state.auth.clone()));
    // What another server on the same database changed wakes this one's
    // claims, followers and held heartbeats too.
    {
        let (queue, events, changes, cancels) = (
            state.queue.clone(),
            state.events.clone(),
            state.changes.clone(),
            state.cancels.clone(),
        );
        state.store.watch_changes(Arc::new(move |woken| {
            let all = [&queue, &events, &changes, &cancels];
            let woken: &[_] = match woken {
                store::Woken::Anything => &all,
                store::Woken::JobEnded => &all[1..3],
            };
            for w in woken {
                w.send_modify(|n| *n = n.wrapping_add(1));
            }
        }));
    }
    // Workers that kept running while the server was down get a full lease
    // to reconnect before any of their jobs counts as lost.
    state.db(|s| s.renew_all_leases(now_ms())).await?;

    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    {
        use std::io::Write;
        // Whoever started the server may have stopped reading: no panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "testbot listening on {url}").and_then(|()| out.flush());
    }
    tracing::info!(%addr, db = %Database::shown(&opts.db), "serving");

    tokio::spawn(reap_leases(state.clone()));
    tokio::spawn(retention(state.clone(), opts.keep, opts.retention_interval));

    let local_url = if addr.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", addr.port())
    } else {
        url.clone()
    };
    let embedded = start_embedded_workers(&state, &opts, worker_configs, &local_url);

    // with_state(()) turns every route into its final service once, here;
    // into_make_service (below) then hands each connection a cheap clone.
    let app = app(state.clone()).with_state(());
    let shutdown = async move {
        wait_for_signal().await;
        embedded.drain().await;
        tracing::info!("shutting down");
        shutdown_tx.send(true).ok();
    };
    // Requests in flight get a moment to finish once shutdown begins;
    // long-polls and log followers end at once on the shutdown signal.
    let grace = Duration::from_secs(5);
    let tracker = connections::Tracker::new(max_connections);
    match tls {
        Some(config) => {
            let listener = tls_listener::TlsListener::new(listener, config, tracker);
            connections::serve(listener, app, shutdown, grace).await
        }
        None => {
            let plain = connections::Plain { listener, tracker };
            connections::serve(plain, app, shutdown, grace).await
        }
    }
    Ok(())
}

/// The workers `serve --worker` runs in this process.
struct Embedded {
    stoppers: Vec<Arc<crate::worker::Stopper>>,
    /// Each worker's thread says here when it has ended.
    ended: tokio::sync::mpsc::Receiver<()>,
}

fn start_embedded_workers(
    state: &AppState,
    opts: &ServeOptions,
    configs: Vec<crate::worker::config::Config>,
    url: &str,
) -> Embedded {
    // Embedded workers trust the server's own certificate.
    let ca = opts.tls.as_ref().map(|(cert, _)| cert.clone());
    let (done, ended) = tokio::sync::mpsc::channel(configs.len().max(1));
    let mut stoppers = Vec::new();
    for config in configs {
        let stopper = Arc::new(crate::worker::Stopper::default());
        stoppers.push(stopper.clone());
        let opts = crate::worker::WorkerOptions {
            config,
            server: Some(url.to_string()),
            token: state.auth.embedded_worker_token().or(opts.token.clone()),
            ca_file: ca.clone(),
            name: None,
            slots: None,
            once: false,
            handle_signals: false,
            stopper: Some(stopper),
        };
        let done = done.clone();
        std::thread::spawn(move || {
            if let Err(e) = crate::worker::run(opts) {
                tracing::error!("embedded worker stopped: {e:#}");
            }
            let _ = done.blocking_send(());
        });
    }
    Embedded { stoppers, ended }
}

impl Embedded {
    /// Passes a signal on. Off the async threads: a worker tells this very
    /// server with a blocking request, which this task must not stand in
    /// the way of.
    fn signal_all(&self) {
        for s in &self.stoppers {
            let s = s.clone();
            tokio::task::spawn_blocking(move || s.signal());
        }
    }

    /// Shuts the embedded workers down as a standalone worker shuts down on
    /// its signals, while the server still takes their results: they drain
    /// (running jobs finish and are reported); another signal aborts their
    /// jobs (killed, reported for retry). Returns once all have ended.
    async fn drain(mut self) {
        if self.stoppers.is_empty() {
            return;
        }
        tracing::info!(
            "stopping the embedded workers: running jobs finish first (signal again to abort them)"
        );
        self.signal_all();
        let mut left = self.stoppers.len();
        while left > 0 {
            tokio::select! {
                ended = self.ended.recv() => match ended {
                    Some(()) => left -= 1,
                    None => break,
                },
                _ = wait_for_signal() => self.signal_all(),
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP re-reads the token files, so a token can be added, rotated or
/// revoked without a restart.
async fn reload_tokens_on_hup(auth: Arc<auth::Auth>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match auth.reload() {
                Ok(()) => tracing::info!("token files re-read"),
                Err(e) => tracing::error!("keeping the old tokens: {e:#}"),
            }
        }
    }
}

/// Deletes finished jobs older than `keep`, in small batches with pauses
/// between them so the API never waits long for the database.
async fn retention(state: AppState, keep: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let before = now_ms() - keep.as_millis() as i64;
        let mut total = 0;
        loop {
            match state.db(move |s| s.purge_finished(before, 200)).await {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    tracing::error!("retention: {e:?}");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                jobs = total,
                "retention deleted finished jobs older than --keep-days"
            );
        }
        collect_artifacts(&state).await;
    }
}

/// Deletes artifacts past their jobtype's `keep_artifacts`, then the bytes
/// no artifact names any more (of those and of purged jobs).
async fn collect_artifacts(state: &AppState) {
    match state.db(|s| s.expire_artifacts(now_ms())).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            artifacts = n,
            "retention deleted artifacts past keep_artifacts"
        ),
        Err(e) => tracing::error!("retention of artifacts: {e:?}"),
    }
    let garbage = match state.db(|s| s.artifact_garbage()).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("retention of artifacts: {e:?}");
            return;
        }
    };
    let store = state.artifacts.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for (kind, name) in garbage {
            let done = if kind == "blob" {
                store.blobs.remove(&name)
            } else {
                store.blobs.remove_partial(&name)
            };
            if let Err(e) = done {
                tracing::warn!(kind, name, "cannot delete an artifact file: {e}");
            }
        }
    })
    .await;
}

/// Once a second: idle heartbeats noted in memory are written, and jobs
/// whose lease ran out go back to the queue (or end). A store that keeps
/// failing is logged when it starts, once a minute while it lasts, and
/// when it ends, not every second.
async fn reap_leases(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failing = Failing::default();
    loop {
        tick.tick().await;
        state.store.check_storage();
        let flushed = state.db(|s| s.flush_heartbeats()).await;
        let expired = state.db(|s| s.expire_leases(now_ms())).await;
        if let Ok(n @ 1..) = expired {
            tracing::warn!(jobs = n, "leases expired; jobs queued again");
            state.wake_claims();
            state.job_changed();
        }
        let error = match (flushed, expired) {
            (Err(e), _) => Some(format!("writing heartbeats: {e}")),
            (_, Err(e)) => Some(format!("expiring leases: {e}")),
            _ => None,
        };
        failing.note(error, Instant::now());
    }
}

/// Whether a periodic task's store calls are failing, for logging the
/// start and end of a failure and a reminder a minute apart.
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    told: Option<Instant>,
}

impl Failing {
    const REMIND: Duration = Duration::from_secs(60);

    /// Notes this round's error (None: it went well); logs what is news.
    fn note(&mut self, error: Option<String>, now: Instant) -> bool {
        match (error, self.since) {
            (Some(e), since) => {
                let due = self
                    .told
                    .is_none_or(|t| now.duration_since(t) >= Self::REMIND);
                self.since = since.or(Some(now));
                if due {
                    self.told = Some(now);
                    tracing::error!("{e}");
                }
                due
            }
            (None, Some(since)) => {
                let lasted = crate::wire::format_duration(now.duration_since(since));
                tracing::info!("the store works again, after failing for {lasted}");
                *self = Failing::default();
                true
            }
            (None, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    /// A failing store is logged at once, then once a minute, and its end.
    #[test]
    fn a_lasting_failure_is_logged_once_a_minute() {
        let mut f = super::Failing::default();
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let err = || Some("expiring leases: disk full".to_string());
        assert!(f.note(err(), at(0)));
        assert!(!f.note(err(), at(1)));
        assert!(!f.note(err(), at(59)));
        assert!(f.note(err(), at(60)));
        assert!(!f.note(err(), at(61)));
        assert!(f.note(None, at(62)), "the recovery is news");
        assert!(!f.note(None, at(63)));
        assert!(f.note(err(), at(64)), "a new failure is news");
    }

    /// A handler that panics gets a JSON 500, and the next request is
    /// served as usual.
    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_serving_goes_on() {
        let app = axum::Router::new()
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("deliberately");
                    }
                    "never"
                }),
            )
            .route("/fine", get(|| async { "fine" }))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                super::panic_response,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let plain = super::connections::Plain {
            listener,
            tracker: super::connections::Tracker::new(64),
        };
        tokio::spawn(super::connections::serve(
            plain,
            app,
            std::future::pending(),
            std::time::Duration::ZERO,
        ));
        let get = move |path: &'static str| {
            tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut r = agent.get(format!("http://{addr}{path}")).call().unwrap();
                let body = r.body_mut().read_to_string().unwrap();
                (r.status().as_u16(), body)
            })
        };
        let (status, body) = get("/boom").await.unwrap();
        assert_eq!(status, 500);
        assert!(body.contains("internal server error"), "{body}");
        assert_eq!(get("/fine").await.unwrap(), (200, "fine".to_string()));
    }
}
