//! The children of a supervisor in start order: a slab indexed by start
//! sequence number.
//!
//! Appending is O(1) and slots sit next to each other (a `BTreeMap` filled in
//! order leaves its nodes half empty: twice the memory for 100k children).
//! A removed child leaves a hole; holes are squeezed out by [`Slots::compact`],
//! which renumbers the children and so must only run between operations (the
//! supervisor calls it after each message), never while sequence numbers are
//! held.

/// Children by start sequence number.
pub(crate) struct Slots<T> {
    items: Vec<Option<T>>,
    live: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Room for `n` more children without reallocating.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.items.reserve(n);
    }

    /// Appends a child; returns its sequence number.
    pub(crate) fn push(&mut self, item: T) -> u64 {
        self.items.push(Some(item));
        self.live += 1;
        (self.items.len() - 1) as u64
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&T> {
        self.items.get(seq as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        self.items.get_mut(seq as usize)?.as_mut()
    }

    /// Removes a child, leaving a hole.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<T> {
        let item = self.items.get_mut(seq as usize)?.take();
        if item.is_some() {
            self.live -= 1;
        }
        item
    }

    /// Live children.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Sequence numbers of the live children, in start order.
    pub(crate) fn seqs(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u64)
    }

    /// The live children, in start order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.items.iter().flatten()
    }

    /// The live children, in start order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.items.iter_mut().flatten()
    }

    /// True when holes are more than half of the slab (and it is not tiny).
    pub(crate) fn needs_compaction(&self) -> bool {
        let holes = self.items.len() - self.live;
        holes > 64 && holes > self.live
    }

    /// Squeezes out the holes. Calls `renumbered(item, new_seq)` for every
    /// child, in start order, so the caller can rebuild its indexes.
    pub(crate) fn compact(&mut self, mut renumbered: impl FnMut(&T, u64)) {
        self.items.retain(Option::is_some);
        self.items.shrink_to(self.items.len() * 2);
        for (i, item) in self.items.iter().flatten().enumerate() {
            renumbered(item, i as u64);
        }
    }
}

impl<T> std::ops::Index<u64> for Slots<T> {
    type Output = T;

    fn index(&self, seq: u64) -> &T {
        self.get(seq).expect("no child with this sequence number")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_skipped_and_compaction_renumbers_in_order() {
        let mut s = Slots::default();
        let seqs: Vec<u64> = (0..200).map(|i| s.push(i)).collect();
        for seq in &seqs[..150] {
            assert!(s.remove(*seq).is_some());
        }
        assert_eq!(s.remove(0), None);
        assert_eq!(s.len(), 50);
        assert_eq!(s.seqs().next(), Some(150));
        assert!(s.needs_compaction());
        let mut seen = Vec::new();
        s.compact(|item, seq| seen.push((*item, seq)));
        assert_eq!(seen.first(), Some(&(150, 0)));
        assert_eq!(seen.last(), Some(&(199, 49)));
        assert_eq!(s[49], 199);
        assert!(!s.needs_compaction());
        assert_eq!(s.push(7), 50);
    }
}
