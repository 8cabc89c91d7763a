//! The memory limit of an instance: growth of its memories and tables,
//! counted together, refused past the plugin's `max_memory_mib`.

/// Refuses memory and table growth past the plugin's limit, counted over
/// the sum of every memory and table of the instance (a component may hold
/// several), and remembers that it did so the outcome can say `memory`.
pub(super) struct Limiter {
    pub(super) max_memory: usize,
    /// Bytes of every memory and table of the instance so far.
    pub(super) used: usize,
    pub(super) refused: Option<usize>,
}

/// Most elements of any table (function tables of ordinary guests hold a few thousand).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Bytes a table element costs the host (a pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl Limiter {
    /// Admits growth of one memory or table from `current` to `desired`
    /// bytes if the instance's total stays within the limit.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_memory {
            self.refused = Some(total);
            return false;
        }
        self.used = total;
        true
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS
            && self.grow(
                current.saturating_mul(TABLE_ELEMENT_BYTES),
                desired.saturating_mul(TABLE_ELEMENT_BYTES),
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::Limiter;

    /// The limit is over the sum of an instance's memories: two memories of
    /// 20 MiB do not fit 32 MiB, though each alone would.
    #[test]
    fn the_memory_limit_covers_every_memory_of_an_instance() {
        let engine = wasmtime::Engine::default();
        let limiter = || Limiter {
            max_memory: 32 << 20,
            used: 0,
            refused: None,
        };
        let two = wat::parse_str("(module (memory 320) (memory 320))").unwrap();
        let module = wasmtime::Module::new(&engine, two).unwrap();
        let mut store = wasmtime::Store::new(&engine, limiter());
        store.limiter(|l| l);
        assert!(wasmtime::Instance::new(&mut store, &module, &[]).is_err());
        assert_eq!(store.data().refused, Some(40 << 20));

        let one = wat::parse_str("(module (memory 320))").unwrap();
        let module = wasmtime::Module::new(&engine, one).unwrap();
        let mut store = wasmtime::Store::new(&engine, limiter());
        store.limiter(|l| l);
        assert!(wasmtime::Instance::new(&mut store, &module, &[]).is_ok());
        assert_eq!(store.data().used, 20 << 20);
    }
}
