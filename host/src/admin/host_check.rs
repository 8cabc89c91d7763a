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

/// The name a request is for: the authority of an absolute-form URI
/// (`GET http://host/...`), which wins over `Host` (RFC 9112, 3.2.2), else
/// its one `Host` header. `None` for more than one `Host` header (a
/// request RFC 9112 says to refuse) or one that is not text.
fn target(req: &Request) -> Option<String> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return None;
    }
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    Some(host.map_or(Ok(""), |h| h.to_str()).ok()?.to_owned())
}

/// The middleware: `421 Misdirected Request` for a `Host` not allowed,
/// `400` for a request with more than one `Host`.
pub async fn check(State(names): State<Arc<HostNames>>, req: Request, next: Next) -> Response {
    let Some(host) = target(&req) else {
        return super::api::error(
            StatusCode::BAD_REQUEST,
            "a request must carry one Host header",
        );
    };
    if names.allows(&host) {
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

    fn request(uri: &str, hosts: &[&str]) -> Request {
        let mut req = Request::builder().uri(uri);
        for h in hosts {
            req = req.header(header::HOST, *h);
        }
        req.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn the_uri_authority_wins_and_two_host_headers_are_refused() {
        let t = |uri, hosts: &[&str]| target(&request(uri, hosts));
        assert_eq!(
            t("/api/overview", &["localhost:1"]).as_deref(),
            Some("localhost:1")
        );
        assert_eq!(t("/api/overview", &[]).as_deref(), Some(""));
        assert_eq!(
            t("http://evil.example/api/overview", &["localhost"]).as_deref(),
            Some("evil.example")
        );
        assert_eq!(t("/api/overview", &["localhost", "evil.example"]), None);
    }
}
