//! Host bindings generated from `wit/symphony.wit`: the single `bindgen!`.
//!
//! Every import is `async` (host functions do Redis I/O) and `trappable` (a
//! host bug or an exhausted limit ends the invocation as a trap); errors a
//! plugin should handle travel inside the WIT `result`.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use symphony::plugin::types::RepoError as WitRepoError;

impl From<crate::repo::RepoError> for WitRepoError {
    fn from(e: crate::repo::RepoError) -> Self {
        use crate::repo::RepoError as E;
        match e {
            E::NotFound => WitRepoError::NotFound,
            E::InvalidInput(m) => WitRepoError::InvalidInput(m),
            E::Unavailable(m) => WitRepoError::Unavailable(m),
            E::Denied(m) => WitRepoError::Denied(m),
        }
    }
}
