//! A gateway's items waiting for their replies, by key: the first reply
//! to a key answers its item; later ones (a redelivered duplicate, an item
//! no longer wanted) find nobody.

use std::collections::HashMap;

/// Waiters by key.
#[derive(Debug)]
pub struct Pending<W> {
    next: u64,
    waiting: HashMap<u64, W>,
}

impl<W> Pending<W> {
    /// Nobody waiting; keys start at 1.
    pub fn new() -> Self {
        Pending { next: 1, waiting: HashMap::new() }
    }

    /// Registers a waiter under a new key.
    pub fn insert(&mut self, waiter: W) -> u64 {
        let key = self.next;
        self.next += 1;
        self.waiting.insert(key, waiter);
        key
    }

    /// The waiter of `key`, taken: `None` if already answered or forgotten.
    pub fn take(&mut self, key: u64) -> Option<W> {
        self.waiting.remove(&key)
    }

    /// Whether `key` still waits (items cancelled meanwhile are not sent).
    pub fn contains(&self, key: u64) -> bool {
        self.waiting.contains_key(&key)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reply_wins_and_keys_are_never_reused() {
        let mut p = Pending::new();
        let a = p.insert("a");
        let b = p.insert("b");
        assert_ne!(a, b);
        assert_eq!(p.take(a), Some("a"));
        assert_eq!(p.take(a), None, "a duplicate reply finds nobody");
        assert!(p.contains(b) && !p.contains(a));
        assert_eq!(p.take(b), Some("b"));
        assert!(p.is_empty());
        assert!(p.insert("c") > b);
    }
}
