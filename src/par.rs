//! Deterministic parallel reductions.
//!
//! A sum of floating-point numbers depends on the order of the additions. Rayon's `sum`,
//! `reduce` and `fold` combine partial results in an order decided by work stealing (which
//! thread split off which range, and when), so they can return different bits from run to
//! run, and the partition itself changes with the number of threads. Every reduction in
//! `ufm` therefore goes through this module's pattern instead (as the convolution layer in
//! [`crate::nn::layers::conv`] does):
//!
//! 1. the index range is cut into **lanes** by a rule that depends only on the problem's
//!    shape (never on [`rayon::current_num_threads`]);
//! 2. each lane is reduced sequentially, in index order, into its own partial result, with
//!    lanes running in parallel;
//! 3. the partials are collected into a `Vec` indexed by lane and combined left to right.
//!
//! The result is then the same bits on every run and on any number of threads: threads only
//! decide which core computes which lane. Scratch buffers may still be per thread (their
//! contents never reach a result).

/// How many consecutive items each lane takes when `n_items` items are split into at most
/// `max_lanes` lanes: $\lceil n/\min(n, L)\rceil$ (at least 1). Depends only on its
/// arguments.
pub fn lane_len(n_items: usize, max_lanes: usize) -> usize {
    n_items.div_ceil(max_lanes.max(1)).max(1)
}

/// Maximum number of lanes when each lane's partial result takes `bytes_per_lane` bytes:
/// `max_lanes`, lowered so that all partials together stay within `budget` bytes, but never
/// below `min_lanes`. A function of the sizes only, so the partition it induces is the same on
/// every machine.
pub fn lanes_within(
    max_lanes: usize,
    min_lanes: usize,
    bytes_per_lane: usize,
    budget: usize,
) -> usize {
    (budget / bytes_per_lane.max(1)).clamp(min_lanes.max(1), max_lanes.max(min_lanes).max(1))
}

/// Combines the partials left to right with `merge`; `None` for no partials.
pub fn combine_in_order<A>(parts: Vec<A>, mut merge: impl FnMut(&mut A, A)) -> Option<A> {
    let mut it = parts.into_iter();
    let mut acc = it.next()?;
    for p in it {
        merge(&mut acc, p);
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_cover_the_range_and_ignore_the_thread_count() {
        for n in [0usize, 1, 5, 31, 32, 33, 1000] {
            let l = lane_len(n, 32);
            assert!(l >= 1);
            assert!(n.div_ceil(l) <= 32, "{n}: {} lanes", n.div_ceil(l));
        }
        assert_eq!(lanes_within(32, 4, 1 << 20, 8 << 20), 8);
        assert_eq!(lanes_within(32, 4, 1 << 30, 8 << 20), 4);
        assert_eq!(lanes_within(32, 4, 1, 8 << 20), 32);
    }

    #[test]
    fn combination_order_is_left_to_right() {
        let parts = vec![String::from("a"), "b".into(), "c".into()];
        let s = combine_in_order(parts, |a, b| {
            a.push_str(&b);
        });
        assert_eq!(s.as_deref(), Some("abc"));
        assert_eq!(combine_in_order(Vec::<f64>::new(), |a, b| *a += b), None);
    }
}
