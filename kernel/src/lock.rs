//! Locks that outlive a panic: a thread that panicked while holding one leaves its data as it
//! was, and every later cell goes on using it (a poisoned `Mutex` would fail them all).

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, taking the data over from a thread that panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `l`, as [`lock`] does.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `l`, as [`lock`] does.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn state_stays_usable_after_a_thread_panicked_holding_the_lock() {
        let state = Arc::new(Mutex::new(vec![1]));
        let table = Arc::new(RwLock::new(0));
        let (s, t) = (state.clone(), table.clone());
        let panicked = std::thread::spawn(move || {
            let mut v = s.lock().unwrap();
            v.push(2);
            let _w = t.write().unwrap();
            panic!("a bug in one thread");
        })
        .join();
        assert!(panicked.is_err());
        assert!(state.is_poisoned() && table.is_poisoned());
        // What the thread did before it panicked is there, and later users go on.
        lock(&state).push(3);
        assert_eq!(*lock(&state), [1, 2, 3]);
        *write(&table) += 1;
        assert_eq!(*read(&table), 1);
    }
}
