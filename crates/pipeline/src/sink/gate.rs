//! Writes to the board that stand in for state still being built. While a start or a rebuild
//! restores its state, the board serves the last committed numbers read back from the
//! metrics topic; once the state is built the board is the state's, and a read finishing
//! later must not write over it. Both modes fill the board through a [`Gate`] that the start
//! or rebuild closes when it ends.

use std::sync::{Arc, Mutex, MutexGuard};

/// Whether the board may still be filled, with what the filling keeps (`T`) under the same
/// lock: a write runs holding it, so closing waits for a write under way and no write starts
/// after it.
pub(crate) struct Gate<T>(Arc<Mutex<(bool, T)>>);

impl<T> Clone for Gate<T> {
    fn clone(&self) -> Self {
        Gate(self.0.clone())
    }
}

impl<T: Default> Gate<T> {
    pub fn open() -> Gate<T> {
        Gate(Arc::new(Mutex::new((true, T::default()))))
    }

    fn lock(&self) -> MutexGuard<'_, (bool, T)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on what the filling keeps, if the gate is still open.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut g = self.lock();
        let (open, kept) = &mut *g;
        open.then(|| f(kept))
    }

    pub fn is_open(&self) -> bool {
        self.lock().0
    }

    /// Closes the gate: what the filling kept.
    pub fn close(&self) -> T {
        let mut g = self.lock();
        g.0 = false;
        std::mem::take(&mut g.1)
    }

    /// A guard that closes the gate when dropped, however the build it belongs to ends.
    pub fn closed_on_drop(&self) -> CloseOnDrop<T> {
        CloseOnDrop(self.clone())
    }
}

/// See [`Gate::closed_on_drop`].
pub(crate) struct CloseOnDrop<T: Default>(Gate<T>);

impl<T: Default> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_runs_nothing_and_gives_back_what_was_kept() {
        let gate: Gate<Vec<u32>> = Gate::open();
        assert_eq!(gate.with(|v| v.push(1)), Some(()));
        let other = gate.clone();
        assert!(other.is_open());
        assert_eq!(other.close(), vec![1]);
        assert!(!gate.is_open());
        assert_eq!(gate.with(|v| v.push(2)), None);
        assert_eq!(gate.close(), Vec::<u32>::new());
    }

    #[test]
    fn the_guard_closes_the_gate_when_dropped() {
        let gate: Gate<()> = Gate::open();
        {
            let _guard = gate.closed_on_drop();
            assert!(gate.is_open());
        }
        assert!(!gate.is_open());
        assert_eq!(gate.with(|_| 1), None);
    }
}
