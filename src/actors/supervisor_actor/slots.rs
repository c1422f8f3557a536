//! The children of a supervisor in start order, each under a stable key.
//!
//! Keys are handed out in increasing order and never reused, so the slab,
//! which only ever appends, stays sorted by key: a key is found by binary
//! search, with no index to keep in memory (a `BTreeMap` filled in order
//! leaves its nodes half empty: twice the memory for 100k children). A
//! removed child leaves a hole; holes are squeezed out once they are the
//! majority. Keys survive that, so work in flight (a start or stop running
//! in a task, a queued operator call) can hold a key across any number of
//! messages.

/// A child's key: stable for the child's whole life in its supervisor.
pub(crate) type Key = u64;

/// Children by key, in start order.
pub(crate) struct Slots<T> {
    items: Vec<(Key, Option<T>)>,
    next: Key,
    live: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            next: 0,
            live: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Room for `n` more children without reallocating.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.items.reserve(n);
    }

    /// Appends a child; returns its key.
    pub(crate) fn push(&mut self, item: T) -> Key {
        let key = self.next;
        self.next += 1;
        self.items.push((key, Some(item)));
        self.live += 1;
        key
    }

    fn position(&self, key: Key) -> Option<usize> {
        self.items.binary_search_by_key(&key, |(k, _)| *k).ok()
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        self.items[self.position(key)?].1.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let pos = self.position(key)?;
        self.items[pos].1.as_mut()
    }

    /// Removes a child, leaving a hole (squeezed out once holes are the
    /// majority).
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let pos = self.position(key)?;
        let item = self.items[pos].1.take();
        if item.is_some() {
            self.live -= 1;
            let holes = self.items.len() - self.live;
            if holes > 64 && holes > self.live {
                self.items.retain(|(_, s)| s.is_some());
                self.items.shrink_to(self.items.len() * 2);
            }
        }
        item
    }

    /// Live children.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Keys of the live children, in start order.
    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = Key> + '_ {
        self.items
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(k, _)| *k)
    }

    /// The live children, in start order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, &T)> + '_ {
        self.items
            .iter()
            .filter_map(|(k, s)| s.as_ref().map(|s| (*k, s)))
    }

    /// The live children, in start order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.items.iter_mut().filter_map(|(_, s)| s.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_compaction_and_order_is_kept() {
        let mut s = Slots::default();
        let keys: Vec<Key> = (0..200).map(|i| s.push(i)).collect();
        for key in &keys[..150] {
            assert!(s.remove(*key).is_some());
        }
        assert_eq!(s.remove(0), None);
        assert_eq!(s.len(), 50);
        assert!(s.items.len() < 200, "holes were squeezed out");
        assert_eq!(s.keys().next(), Some(150));
        assert_eq!(s.get(199), Some(&199));
        assert_eq!(s.get(10), None);
        assert_eq!(s.push(7), 200);
        let order: Vec<i32> = s.iter().map(|(_, v)| *v).collect();
        assert_eq!(order.first(), Some(&150));
        assert_eq!(order.last(), Some(&7));
    }
}
