//! `[admin]` in the manifest: where the admin server listens, its token
//! file, its metrics label and the host names it answers without a token.
//! (The server itself is the `admin` module, which reads these.)

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

/// Where the admin server listens when nothing says otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

/// `[admin] listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// No admin server.
    Off,
    /// Listen here (port 0: a free port, logged at start).
    On(SocketAddr),
}

impl Default for AdminListen {
    fn default() -> Self {
        // A constant that parses; checked by a test.
        Self::On(SocketAddr::from(([127, 0, 0, 1], 9464)))
    }
}

impl FromStr for AdminListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse::<SocketAddr>().map(Self::On).map_err(|_| {
            format!("{s:?} is not an admin listen address: use IP:PORT (e.g. {DEFAULT_ADMIN_LISTEN}, port 0 for a free port) or \"off\"")
        })
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::On(addr) => write!(f, "{addr}"),
        }
    }
}

impl<'de> Deserialize<'de> for AdminListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[admin]` in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Where to listen (default `127.0.0.1:9464`), or `off`.
    #[serde(default)]
    pub listen: AdminListen,
    /// A file holding the token (its first line). `SYMPHONY_ADMIN_TOKEN`
    /// takes precedence.
    pub token_file: Option<PathBuf>,
    /// Adds a `tenant` label to `symphony_dispatches_total` (one series per
    /// tenant, plugin and outcome: leave it off with many tenants).
    #[serde(default)]
    pub metrics_tenant_label: bool,
    /// Names, besides `localhost`, `127.0.0.1` and `[::1]`, that requests
    /// may give as their `Host` while no token is set (a name the operator
    /// reaches this host by through a tunnel, say). Anything else is
    /// refused, so that a web page cannot reach the API through DNS
    /// rebinding.
    #[serde(default)]
    pub host_names: Vec<String>,
}
