//! DNS rebinding: while no token guards the admin server (loopback only),
//! a web page the operator visits could point its own name at 127.0.0.1
//! and call the API from the browser. Such a request names the attacker's
//! host in its `Host` header, so without a token only requests whose `Host`
//! is a loopback name or address (`localhost`, `127.0.0.1`, `[::1]`), with
//! the server's port or none, or a name listed in `[admin] host_names`, are
//! answered. The probes (`/healthz`, `/readyz`) are not checked, so that
//! orchestrators sending a pod IP keep working; with a token set, the token
//! is the defence and any `Host` is accepted.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// The `Host` values the server answers without a token.
#[derive(Debug, Clone)]
pub struct HostNames {
    names: Vec<String>,
    port: u16,
}

impl HostNames {
    /// The loopback names and `extra` (from `[admin] host_names`, compared
    /// without case), on `port`.
    pub fn new(extra: &[String], port: u16) -> Self {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.extend(extra.iter().map(|n| n.to_ascii_lowercase()));
        HostNames { names, port }
    }

    /// Whether a request naming `host` is answered.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let (name, port) = match host.rsplit_once(':') {
            // `[::1]` alone has colons inside its brackets.
            Some((name, port)) if !port.ends_with(']') => (name, Some(port)),
            _ => (host.as_str(), None),
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>() == Ok(self.port));
        port_ok && self.names.iter().any(|n| n == name)
    }
}

/// The middleware: `421 Misdirected Request` for a `Host` not allowed.
pub async fn check(State(names): State<Arc<HostNames>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if names.allows(host) {
        return next.run(req).await;
    }
    super::api::error(
        StatusCode::MISDIRECTED_REQUEST,
        "this admin server answers only requests to a loopback name (localhost, 127.0.0.1, [::1]) \
         or to a name in [admin] host_names while no admin token is set",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_and_listed_ones_on_our_port_pass() {
        let names = HostNames::new(&["Admin.Internal".to_owned()], 9464);
        for ok in [
            "localhost:9464",
            "127.0.0.1:9464",
            "[::1]:9464",
            "LOCALHOST:9464",
            "localhost",
            "admin.internal:9464",
            "[::1]",
        ] {
            assert!(names.allows(ok), "{ok}");
        }
        for bad in [
            "rebind.attacker.example:9464",
            "127.0.0.1:9465",
            "127.0.0.1.attacker.example",
            "localhost.:9464",
            "",
            "127.0.0.1:9464:9464",
            "[::1]:x",
            "10.0.0.1:9464",
        ] {
            assert!(!names.allows(bad), "{bad}");
        }
    }
}
