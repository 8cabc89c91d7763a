//! The admin HTTP server, mounted as a service of the [`Host`](crate::Host):
//! `GET /healthz` (the process serves), `GET /readyz` (Redis reachable,
//! every listener subscribed, a plugin set loaded), `GET /metrics`
//! (Prometheus, see [`crate::metrics`]), the JSON API under `/api/` (`api.rs`)
//! and the dashboard at `/` (`page.rs`, assets embedded in the binary).
//!
//! It listens on loopback by default (`[admin] listen`, `--admin-listen`,
//! `SYMPHONY_ADMIN_LISTEN`). Any other address needs a token
//! (`SYMPHONY_ADMIN_TOKEN` or `[admin] token_file`): the host refuses to
//! start without one. With a token set, every endpoint but the two probes
//! and the page's static files needs `Authorization: Bearer <token>`.
//! Changes are POSTs with a JSON body; every answer carries `nosniff`,
//! `X-Frame-Options: DENY` and no referrer, the page a strict CSP. Without
//! a token, only requests to a loopback name (or one of `[admin]
//! host_names`) are answered, against DNS rebinding (`host_check.rs`);
//! connections are capped and idle ones closed (`conns.rs`).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::context::HostContext;
pub use crate::manifest::admin::{AdminConfig, AdminListen, DEFAULT_ADMIN_LISTEN};

mod api;
mod conns;
mod host_check;
mod page;

/// How long `/readyz` waits for Redis to answer a PING.
const PING_TIMEOUT: Duration = Duration::from_millis(1000);

/// The bearer token that guards the admin server.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token from `SYMPHONY_ADMIN_TOKEN`, else from `token_file`
    /// (relative to `base`); `None` when neither is set.
    ///
    /// # Errors
    /// An unreadable or empty token file, or an empty token.
    pub fn resolve(
        env: Option<String>,
        file: Option<&Path>,
        base: &Path,
    ) -> anyhow::Result<Option<Token>> {
        let raw = match (env, file) {
            (Some(t), _) => t,
            (None, Some(f)) => {
                let path = base.join(f);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read [admin] token_file {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }
            (None, None) => return Ok(None),
        };
        let t = raw.trim();
        anyhow::ensure!(!t.is_empty(), "the admin token is empty");
        Ok(Some(Token(t.into())))
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compare every byte, whatever the first difference.
        let (a, b) = (given.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// An admin server whose socket is bound (so a port in use fails the
/// start), ready to be mounted.
pub struct AdminServer {
    listener: TcpListener,
    token: Option<Token>,
    host_names: Vec<String>,
}

impl AdminServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// A non-loopback address without a token, or an address that cannot
    /// be bound (in use, not local).
    pub async fn bind(addr: SocketAddr, token: Option<Token>) -> anyhow::Result<AdminServer> {
        anyhow::ensure!(
            addr.ip().is_loopback() || token.is_some(),
            "the admin server would listen on {addr}, beyond loopback, without a token: \
             set SYMPHONY_ADMIN_TOKEN or [admin] token_file, or listen on 127.0.0.1"
        );
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen for the admin server on {addr} (in use? choose another with \
                 --admin-listen or [admin] listen, port 0 for a free one, or \"off\")"
            )
        })?;
        Ok(AdminServer {
            listener,
            token,
            host_names: Vec::new(),
        })
    }

    /// The bound address (the real port when 0 was asked).
    ///
    /// # Errors
    /// The socket's address cannot be read.
    /// Adds `[admin] host_names` to the names answered without a token.
    pub fn with_host_names(mut self, names: Vec<String>) -> Self {
        self.host_names = names;
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel`.
    ///
    /// # Errors
    /// The server failing.
    pub async fn serve(self, ctx: HostContext, cancel: CancellationToken) -> anyhow::Result<()> {
        let port = self
            .local_addr()
            .context("the admin server's address")?
            .port();
        let names = match self.token {
            None => Some(Arc::new(host_check::HostNames::new(&self.host_names, port))),
            Some(_) => None,
        };
        let state = Arc::new(Admin {
            ctx,
            token: self.token,
        });
        let guarded = Router::new()
            .route("/metrics", get(metrics))
            .route("/api/overview", get(api::overview))
            .route("/api/dispatches", get(api::dispatches))
            .route("/api/triggers", get(api::triggers))
            .route("/api/triggers/cancel", post(api::cancel_trigger))
            .route("/api/in-flight", get(api::in_flight))
            .route("/api/dead", get(api::dead))
            .route("/api/dead/retry", post(api::dead_retry))
            .route("/api/dead/purge", post(api::dead_purge))
            .route("/api/hosts", get(api::hosts))
            .route("/api/plugins", get(api::plugins))
            .route("/api/plugins/reload", post(api::reload))
            .route_layer(middleware::from_fn(json_posts_only))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
        let mut pages = Router::new()
            .merge(page::routes())
            .merge(guarded)
            .fallback(|| async { api::error(StatusCode::NOT_FOUND, "no such page") });
        if let Some(names) = names {
            pages = pages.layer(middleware::from_fn_with_state(names, host_check::check));
        }
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .merge(pages)
            .layer(middleware::from_fn(security_headers))
            .with_state(state);
        conns::serve(self.listener, app, cancel).await;
        Ok(())
    }
}

struct Admin {
    ctx: HostContext,
    token: Option<Token>,
}

async fn require_token(State(admin): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    match &admin.token {
        Some(token) if !token.accepts(req.headers()) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid admin token is needed: Authorization: Bearer <token>\n",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

/// A POST must carry JSON: a cross-site form (which cannot set that
/// content type without the browser asking first) changes nothing.
async fn json_posts_only(req: Request, next: Next) -> Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if req.method() == Method::POST && !json {
        return api::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a POST needs a JSON body (Content-Type: application/json)",
        );
    }
    next.run(req).await
}

/// Headers on every answer: no sniffing, no framing, no referrer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

async fn healthz() -> Response {
    no_store(
        (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ok"}"#,
        )
            .into_response(),
    )
}

/// 200 when Redis answers on every pool, every listener is subscribed and a
/// plugin set is loaded; 503 with what is not, otherwise.
async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let ctx = &admin.ctx;
    let mut not_ready = Vec::new();
    for alias in crate::pools::PoolAlias::ALL {
        let Ok(pool) = ctx.pools().get(alias) else {
            continue;
        };
        let ping = tokio::time::timeout(
            PING_TIMEOUT,
            pool.conn().query::<String>(&redis::cmd("PING")),
        )
        .await;
        match ping {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => not_ready.push(json!({"check": "redis", "pool": alias.to_string(), "error": e.to_string()})),
            Err(_) => not_ready.push(json!({"check": "redis", "pool": alias.to_string(), "error": "no answer within 1 s"})),
        }
    }
    for alias in ctx.deliveries().keys() {
        if !ctx.stats().metrics.listener_up(*alias) {
            not_ready.push(
                json!({"check": "listener", "pool": alias.to_string(), "error": "not subscribed"}),
            );
        }
    }
    let plugins = ctx.plugins().plugins().len();
    if plugins == 0 {
        not_ready.push(json!({"check": "plugins", "error": "no plugin set loaded"}));
    }
    let (status, body) = if not_ready.is_empty() {
        (
            StatusCode::OK,
            json!({"status": "ready", "plugins": plugins}),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not ready", "not_ready": not_ready}),
        )
    };
    no_store((status, axum::Json(body)).into_response())
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let ctx = &admin.ctx;
    ctx.refresh_gauges().await;
    match ctx.stats().render_metrics() {
        Ok(text) => no_store(
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
                .into_response(),
        ),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// API data is never cached.
fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_the_default_is_loopback() {
        assert_eq!(
            AdminListen::default(),
            DEFAULT_ADMIN_LISTEN.parse::<AdminListen>().unwrap()
        );
        assert_eq!("off".parse::<AdminListen>(), Ok(AdminListen::Off));
        assert_eq!("OFF".parse::<AdminListen>(), Ok(AdminListen::Off));
        assert_eq!(
            "127.0.0.1:0".parse::<AdminListen>().unwrap().to_string(),
            "127.0.0.1:0"
        );
        assert_eq!(
            "[::1]:9464".parse::<AdminListen>().unwrap().to_string(),
            "[::1]:9464"
        );
        for bad in ["localhost:9464", "9464", "", "127.0.0.1"] {
            let err = bad.parse::<AdminListen>().unwrap_err();
            assert!(err.contains("is not an admin listen address"), "{err}");
        }
    }

    #[test]
    fn a_token_accepts_only_itself_as_a_bearer() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Token::resolve(None, None, dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join("t"), "  abc123 \nignored\n").unwrap();
        let token = Token::resolve(None, Some(Path::new("t")), dir.path())
            .unwrap()
            .unwrap();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(token.accepts(&with("Bearer abc123")));
        for wrong in [
            "Bearer abc12",
            "Bearer abc1234",
            "bearer abc123",
            "abc123",
            "Bearer ",
        ] {
            assert!(!token.accepts(&with(wrong)), "{wrong}");
        }
        assert!(!token.accepts(&HeaderMap::new()));
        // The environment wins over the file; empty is an error.
        let env = Token::resolve(Some("xyz".into()), Some(Path::new("t")), dir.path())
            .unwrap()
            .unwrap();
        assert!(env.accepts(&with("Bearer xyz")));
        assert!(Token::resolve(Some("  ".into()), None, dir.path()).is_err());
        assert!(Token::resolve(None, Some(Path::new("missing")), dir.path()).is_err());
        assert!(
            format!("{token:?}").contains(".."),
            "the token is not logged"
        );
    }
}
