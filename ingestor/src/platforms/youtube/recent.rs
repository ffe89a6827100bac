//! A bounded memory of recent keys: the message ids already emitted for a
//! chat (so a resumed or restarted stream never emits one twice), and the
//! gifters of recent membership gifts.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// The last `capacity` keys inserted, with a value each; the oldest is
/// forgotten first.
#[derive(Debug)]
pub struct Recent<K, V = ()> {
    capacity: usize,
    order: VecDeque<K>,
    values: HashMap<K, V>,
}

impl<K: Eq + Hash + Clone, V> Recent<K, V> {
    /// Remembers at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            values: HashMap::new(),
        }
    }

    /// Remembers `key` with `value`. Returns false (and keeps the old
    /// value) if it was already remembered.
    pub fn insert(&mut self, key: K, value: V) -> bool {
        if self.values.contains_key(&key) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.values.remove(&old);
        }
        self.order.push_back(key.clone());
        self.values.insert(key, value);
        true
    }

    /// The value of `key`, if remembered.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.values.get(key)
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: &K) -> bool {
        self.values.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_n_keys() {
        let mut r: Recent<u32> = Recent::new(3);
        assert!(r.insert(1, ()));
        assert!(!r.insert(1, ()), "already there");
        r.insert(2, ());
        r.insert(3, ());
        r.insert(4, ());
        assert!(!r.contains(&1), "the oldest is forgotten");
        assert!(r.contains(&2) && r.contains(&4));
        assert_eq!((r.order.len(), r.values.len()), (3, 3));
        let mut m: Recent<&str, &str> = Recent::new(2);
        m.insert("a", "x");
        assert_eq!(m.get(&"a"), Some(&"x"));
        assert_eq!(m.order.len(), 1);
    }
}
