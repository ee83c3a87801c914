//! The vmalloc region's address ranges: which are free, found in O(log n),
//! and which are taken, looked up in O(log n). Pure code with no kernel
//! dependencies: the same file is property-tested on the host
//! (tests/host/props) against a brute-force model.
//!
//! Both are treaps keyed by start address (a binary search tree that stays
//! balanced with high probability: each node carries a pseudo-random
//! priority, here a hash of its key). The free ranges' tree is *augmented*
//! as Linux's `free_vmap_area_root` is: each node knows the largest range
//! in its subtree, so the search for the lowest range that can hold a
//! request skips every subtree too small for it.
//!
//! Nothing here allocates behind the caller's back: a node is made with
//! [`Node::new`], which fails instead of panicking when its allocator is
//! out of memory, and the operations take the nodes they may need up
//! front. So running out of memory is an error before anything changes,
//! never a panic with a lock held. Where the nodes live is the caller's
//! choice, the allocator `A`: the kernel's vmalloc keeps them in slab
//! caches (`slab.rs`), the host tests on the host's heap.

use alloc::alloc::{AllocError, Allocator, Global};
use alloc::boxed::Box;
use core::mem::MaybeUninit;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::Relaxed;

type Link<V, A> = Option<Box<Node<V, A>, A>>;

/// One entry of a [`Tree`]: a key (a start address) and its value.
pub struct Node<V, A: Allocator = Global> {
    key: u64,
    value: V,
    priority: u64,
    /// The largest weight in this subtree (see [`Weight`]).
    max: u64,
    left: Link<V, A>,
    right: Link<V, A>,
}

/// What the augmentation measures: a free range's length; 0 for values
/// that need no search.
pub trait Weight {
    fn weight(&self) -> u64;
}

impl<V: Weight, A: Allocator + Default> Node<V, A> {
    /// A node for `value` at `key`, from a new object of `A`.
    pub fn new(key: u64, value: V) -> Result<Box<Node<V, A>, A>, AllocError> {
        // The object first, then the node written into it: built on the
        // stack before the allocation, it was copied in (a `memcpy` call
        // of 48 or 80 bytes on every reservation that needs a node).
        let object = Box::try_new_uninit_in(A::default())?;
        Ok(Node::init(object, key, value))
    }

    /// A node for `value` at `key`, written into an object of `A` the
    /// caller has (one of several allocated at once, say).
    pub fn init(object: Box<MaybeUninit<Node<V, A>>, A>, key: u64, value: V) -> Box<Node<V, A>, A> {
        let priority = mix(NODES_MADE.fetch_add(1, Relaxed));
        Box::write(object, Node { key, value, priority, max: 0, left: None, right: None })
    }
}

impl<V: Weight, A: Allocator> Node<V, A> {
    pub fn key(&self) -> u64 {
        self.key
    }

    pub fn value(&self) -> &V {
        &self.value
    }

    pub fn value_mut(&mut self) -> &mut V {
        &mut self.value
    }

    /// Moves the node (not in a tree) to `key`.
    pub fn rekey(&mut self, key: u64) {
        self.key = key;
    }

    fn fix(&mut self) {
        let child = |l: &Link<V, A>| l.as_ref().map_or(0, |n| n.max);
        self.max = self.value.weight().max(child(&self.left)).max(child(&self.right));
    }
}

/// Nodes made so far: a node's priority is a function of its number, not
/// of its key, so that a node can move within its own free range (a
/// range taken from its start, grown down to a freed neighbour) in place:
/// its priority, and so the tree's shape, stay valid.
static NODES_MADE: AtomicU64 = AtomicU64::new(0);

/// splitmix64: a priority that looks random but is a function of its input.
fn mix(key: u64) -> u64 {
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A treap keyed by `u64`, augmented with the largest [`Weight`] below
/// each node.
pub struct Tree<V, A: Allocator = Global> {
    root: Link<V, A>,
    len: usize,
}

impl<V: Weight, A: Allocator> Default for Tree<V, A> {
    fn default() -> Self {
        Tree::new()
    }
}

impl<V: Weight, A: Allocator> Tree<V, A> {
    pub const fn new() -> Tree<V, A> {
        Tree { root: None, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[allow(dead_code, reason = "the host property tests' view (tests/host/props); the kernel needs none")]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts `node` in; its key must not be in the tree yet.
    pub fn insert(&mut self, mut node: Box<Node<V, A>, A>) {
        node.fix();
        let (less, rest) = split(self.root.take(), node.key);
        self.root = merge(merge(less, Some(node)), rest);
        self.len += 1;
    }

    /// Takes the node at `key` out.
    pub fn remove(&mut self, key: u64) -> Option<Box<Node<V, A>, A>> {
        self.remove_if(key, |_| true)
    }

    /// Takes the node at `key` out if `wanted(value)`: one walk down to
    /// it, its two subtrees merged in its place, the augmentation mended
    /// on the way back up (no split of the whole path).
    pub fn remove_if(&mut self, key: u64, wanted: impl FnOnce(&V) -> bool) -> Option<Box<Node<V, A>, A>> {
        fn down<V: Weight, A: Allocator>(
            link: &mut Link<V, A>,
            key: u64,
            wanted: impl FnOnce(&V) -> bool,
        ) -> Option<Box<Node<V, A>, A>> {
            let node = link.as_deref_mut()?;
            let found = match key.cmp(&node.key) {
                core::cmp::Ordering::Less => down(&mut node.left, key, wanted),
                core::cmp::Ordering::Greater => down(&mut node.right, key, wanted),
                core::cmp::Ordering::Equal => {
                    if !wanted(&node.value) {
                        return None;
                    }
                    let mut found = link.take().expect("just seen");
                    *link = merge(found.left.take(), found.right.take());
                    return Some(found);
                }
            };
            if found.is_some() {
                node.fix();
            }
            found
        }
        let found = down(&mut self.root, key, wanted)?;
        self.len -= 1;
        Some(found)
    }

    /// Changes the node at `key` in place: `change` may move its key, as
    /// long as no other key of the tree lies between the old key and the
    /// new one (the order stays; the priority does not depend on the key),
    /// and change its value; the augmentation is recomputed on the way
    /// back up. One walk down, no split and no merge. False if no node
    /// has `key`.
    pub fn update(&mut self, key: u64, change: impl FnOnce(&mut u64, &mut V)) -> bool {
        fn down<V: Weight, A: Allocator>(
            link: &mut Link<V, A>,
            key: u64,
            change: impl FnOnce(&mut u64, &mut V),
        ) -> bool {
            let Some(node) = link.as_deref_mut() else { return false };
            let found = match key.cmp(&node.key) {
                core::cmp::Ordering::Less => down(&mut node.left, key, change),
                core::cmp::Ordering::Greater => down(&mut node.right, key, change),
                core::cmp::Ordering::Equal => {
                    change(&mut node.key, &mut node.value);
                    true
                }
            };
            if found {
                node.fix();
            }
            found
        }
        down(&mut self.root, key, change)
    }

    /// The value at `key`, to change: the change must leave its weight as
    /// it was (the augmentation is not recomputed).
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let mut at = self.root.as_deref_mut();
        while let Some(node) = at {
            at = match key.cmp(&node.key) {
                core::cmp::Ordering::Less => node.left.as_deref_mut(),
                core::cmp::Ordering::Greater => node.right.as_deref_mut(),
                core::cmp::Ordering::Equal => return Some(&mut node.value),
            };
        }
        None
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        let mut at = self.root.as_deref();
        while let Some(node) = at {
            at = match key.cmp(&node.key) {
                core::cmp::Ordering::Less => node.left.as_deref(),
                core::cmp::Ordering::Greater => node.right.as_deref(),
                core::cmp::Ordering::Equal => return Some(&node.value),
            };
        }
        None
    }

    /// The entry with the greatest key at or below `key`.
    pub fn at_or_below(&self, key: u64) -> Option<(u64, &V)> {
        let mut at = self.root.as_deref();
        let mut best = None;
        while let Some(node) = at {
            if node.key <= key {
                best = Some((node.key, &node.value));
                at = node.right.as_deref();
            } else {
                at = node.left.as_deref();
            }
        }
        best
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        let mut stack: alloc::vec::Vec<&Node<V, A>> = alloc::vec::Vec::new();
        let mut at = self.root.as_deref();
        core::iter::from_fn(move || {
            while let Some(node) = at {
                stack.push(node);
                at = node.left.as_deref();
            }
            let node = stack.pop()?;
            at = node.right.as_deref();
            Some((node.key, &node.value))
        })
    }
}

/// Nodes kept for reuse, at most `cap`: a stack threaded through their
/// right links. A vmalloc that takes a node and a vfree that gives one
/// back then cost a few stores instead of a round trip to the allocator
/// (Linux keeps one such node per CPU, `ne_fit_preload_node`, for the
/// same call).
pub struct Spares<V, A: Allocator = Global> {
    head: Link<V, A>,
    len: usize,
    cap: usize,
}

impl<V: Weight, A: Allocator> Spares<V, A> {
    pub const fn new(cap: usize) -> Spares<V, A> {
        Spares { head: None, len: 0, cap }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps `node` (out of any tree), or hands it back if the stack is full.
    pub fn put(&mut self, mut node: Box<Node<V, A>, A>) -> Option<Box<Node<V, A>, A>> {
        if self.len == self.cap {
            return Some(node);
        }
        node.left = None;
        node.right = self.head.take();
        self.head = Some(node);
        self.len += 1;
        None
    }

    pub fn take(&mut self) -> Option<Box<Node<V, A>, A>> {
        let mut node = self.head.take()?;
        self.head = node.right.take();
        self.len -= 1;
        Some(node)
    }
}

/// (keys below `key`, keys at or above it).
fn split<V: Weight, A: Allocator>(link: Link<V, A>, key: u64) -> (Link<V, A>, Link<V, A>) {
    let Some(mut node) = link else { return (None, None) };
    if node.key < key {
        let (less, rest) = split(node.right.take(), key);
        node.right = less;
        node.fix();
        (Some(node), rest)
    } else {
        let (less, rest) = split(node.left.take(), key);
        node.left = rest;
        node.fix();
        (less, Some(node))
    }
}

/// Joins two trees, every key of `a` below every key of `b`.
fn merge<V: Weight, A: Allocator>(a: Link<V, A>, b: Link<V, A>) -> Link<V, A> {
    match (a, b) {
        (None, b) => b,
        (a, None) => a,
        (Some(mut a), Some(mut b)) => {
            if a.priority >= b.priority {
                a.right = merge(a.right.take(), Some(b));
                a.fix();
                Some(a)
            } else {
                b.left = merge(Some(a), b.left.take());
                b.fix();
                Some(b)
            }
        }
    }
}

/// A free range of `len` bytes (it starts at its node's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Free {
    pub len: u64,
}

/// The free ranges of an address space, merged where they touch.
pub struct FreeRanges<A: Allocator = Global> {
    tree: Tree<Free, A>,
}

/// The search looks for long enough ranges.
impl Weight for Free {
    fn weight(&self) -> u64 {
        self.len
    }
}

impl<A: Allocator> FreeRanges<A> {
    /// Nothing free.
    pub const fn new() -> FreeRanges<A> {
        FreeRanges { tree: Tree::new() }
    }

    /// How many separate free ranges there are.
    #[allow(dead_code, reason = "the host property tests' view (tests/host/props); the kernel needs none")]
    pub fn ranges(&self) -> usize {
        self.tree.len()
    }

    /// The free ranges, (start, end), in address order.
    #[allow(dead_code, reason = "the host property tests' view (tests/host/props); the kernel needs none")]
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.tree.iter().map(|(start, f)| (start, start + f.len))
    }

    /// A start, aligned to `align` and inside [lo, hi), of a free range
    /// that holds `span` bytes from there; `align` is a power of two, at
    /// least `granule`. First the lowest range of at least `span + align -
    /// granule` bytes, which fits wherever it starts: the augmentation
    /// skips every shorter subtree, O(log n). Only if there is none, the
    /// lowest range whose own start lets the span fit (the region's first
    /// range for an alignment as large as the region): a walk of the
    /// ranges at least `span` long, the only ones that could. So a slot is
    /// found whenever one exists, as Linux's `find_vmap_lowest_match`
    /// tests each range it visits exactly (`is_within_this_va`) and uses
    /// `size + align - 1` only to choose where to look.
    pub fn find(&self, span: u64, align: u64, granule: u64, lo: u64, hi: u64) -> Option<u64> {
        let root = self.tree.root.as_deref();
        let fits_anywhere = span.checked_add(align - granule);
        fits_anywhere
            .and_then(|need| search(root, need, span, align, lo, hi))
            .or_else(|| search(root, span, span, align, lo, hi))
    }

    /// Marks [start, end) free, merging with free neighbours. `spare` is
    /// the node it may need (taken up front so that giving an address
    /// range back cannot fail); the nodes it did not need (the spare, if
    /// the range merged; a neighbour's, if it merged with both) come back,
    /// for the caller to drop or keep.
    pub fn give_back(
        &mut self,
        start: u64,
        end: u64,
        mut spare: Box<Node<Free, A>, A>,
    ) -> [Option<Box<Node<Free, A>, A>>; 2] {
        let before = self.tree.at_or_below(start).map(|(s, f)| (s, *f)).filter(|&(s, f)| s + f.len == start);
        let after = self.tree.get(end).copied();
        // Merged ranges grow in place (no other range lies between a
        // neighbour and the range given back): one walk each, the spare
        // unused.
        match (before, after) {
            (Some((s, _)), Some(next)) => {
                let right = self.tree.remove(end);
                self.tree.update(s, |_, f| f.len = end + next.len - s);
                [right, Some(spare)]
            }
            (Some((s, _)), None) => {
                self.tree.update(s, |_, f| f.len = end - s);
                [Some(spare), None]
            }
            (None, Some(next)) => {
                self.tree.update(end, |key, f| {
                    *key = start;
                    f.len = end + next.len - start;
                });
                [Some(spare), None]
            }
            (None, None) => {
                spare.rekey(start);
                spare.value = Free { len: end - start };
                self.tree.insert(spare);
                [None, None]
            }
        }
    }

    /// Marks [start, start + span) taken; it must lie inside one free
    /// range. `spare` is the node a split in the middle needs; the node
    /// left over (`spare`, or the range's own if nothing is left before
    /// `start`) comes back, for the caller to drop or keep.
    pub fn take(&mut self, start: u64, span: u64, spare: Box<Node<Free, A>, A>) -> Option<Box<Node<Free, A>, A>> {
        let end = start + span;
        let (s, len) = self.tree.at_or_below(start).map(|(s, f)| (s, f.len)).expect("inside a free range");
        let range_end = s + len;
        debug_assert!(end <= range_end, "inside a free range");
        if s == start && end < range_end {
            // From the range's start (first fit's commonest case): the
            // range's node moves up past it, in place.
            self.tree.update(s, |key, f| {
                *key = end;
                f.len = range_end - end;
            });
            return Some(spare);
        }
        let mut node = self.tree.remove(s).expect("just found");
        // The node for what is left after the range: the spare if the
        // range's own node keeps what is left before it.
        let (for_tail, left_over) = if s < start {
            node.value = Free { len: start - s };
            self.tree.insert(node);
            (spare, None)
        } else {
            (node, Some(spare))
        };
        if end < range_end {
            let mut tail = for_tail;
            tail.rekey(end);
            tail.value = Free { len: range_end - end };
            self.tree.insert(tail);
            left_over
        } else {
            Some(for_tail)
        }
    }
}

impl<A: Allocator> Default for FreeRanges<A> {
    fn default() -> Self {
        FreeRanges::new()
    }
}

/// The lowest aligned start for `span` bytes inside [lo, hi), among the
/// ranges of at least `need` bytes (weights are lengths) below `node`;
/// see [`FreeRanges::find`].
fn search<A: Allocator>(
    node: Option<&Node<Free, A>>,
    need: u64,
    span: u64,
    align: u64,
    lo: u64,
    hi: u64,
) -> Option<u64> {
    let node = node?;
    if node.max < need {
        // Too short everywhere below.
        return None;
    }
    if node.key >= hi {
        // This node and its right subtree start at or above `hi`: only
        // the left subtree could still help.
        return search(node.left.as_deref(), need, span, align, lo, hi);
    }
    let (start, end) = (node.key, node.key + node.value.len);
    // Ranges in the left subtree end before this one starts.
    if start > lo
        && let Some(found) = search(node.left.as_deref(), need, span, align, lo, hi)
    {
        return Some(found);
    }
    if node.value.len >= need {
        let at = start.max(lo).checked_next_multiple_of(align)?;
        if at.checked_add(span).is_some_and(|e| e <= end.min(hi)) {
            return Some(at);
        }
    }
    search(node.right.as_deref(), need, span, align, lo, hi)
}
