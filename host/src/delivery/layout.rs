//! How the delivery state lies over the backend: in one [`Space`] (a
//! server's DB), or in a space per slot of a Redis Cluster, found through
//! the hint buckets (`sharded.rs`).
//!
//! [`Delivery`](super::Delivery) asks its layout where a key's state is and
//! which of the layout's ways to claim, reap, count and browse to use; no
//! other code in `delivery` tells the backends apart. A third layout (a
//! Valkey cluster with other slot rules, say) is a new variant here, its
//! own file of claim, reap and gauges beside `sharded.rs`, and its tests:
//! the compiler lists every `match` that must learn it.

use std::sync::Arc;

use super::sharded::State;
use super::space::Space;
use crate::backend::{RedisConn, slot_of};

/// Where the delivery state lies.
#[derive(Clone)]
pub(super) enum Layout {
    /// One space: a server's DB holds every tenant's index, the ready
    /// set, the leases and the metadata; one script sees them all.
    Single,
    /// A space per hash slot of a Redis Cluster, each key's state in the
    /// key's own slot; hosts find work through the hint buckets.
    Sharded(Arc<State>),
}

impl Layout {
    /// The layout the backend behind `conn` needs.
    pub(super) fn for_conn(conn: &RedisConn) -> Layout {
        match conn.is_cluster() {
            true => Layout::Sharded(Arc::default()),
            false => Layout::Single,
        }
    }

    /// The space holding the state of trigger key `key` (the part of an
    /// index member before its tag).
    pub(super) fn space_of(&self, key: &str) -> Space {
        match self {
            Layout::Single => Space::standalone(),
            Layout::Sharded(_) => Space::of_slot(slot_of(key)),
        }
    }

    /// The sharded state, if the layout is sharded.
    pub(super) fn sharded(&self) -> Option<&State> {
        match self {
            Layout::Single => None,
            Layout::Sharded(state) => Some(state),
        }
    }

    /// Whether one script sees a tenant's whole due index, so that arming
    /// can count it against the pending cap (else the host counts:
    /// `quota::Quotas::admit_pending`), and the dashboard can page it.
    pub(super) fn one_space(&self) -> bool {
        matches!(self, Layout::Single)
    }
}
