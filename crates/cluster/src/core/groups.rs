//! The one group planner: how items going to the engine (gateway) and
//! results going back (worker) are cut into messages.

/// How many items of a burst of `items` go in one message: a fair share
/// per worker (so a burst spreads over the fleet), never more than
/// `group_max` (the least a worker serving it runs at once), at least one.
pub fn per_group(items: usize, workers: usize, group_max: usize) -> usize {
    items.div_ceil(workers.max(1)).clamp(1, group_max.max(1))
}

/// Cuts members of `sizes` bytes, in order, into consecutive groups of at
/// most `per_group` members and `budget` bytes; a member larger than the
/// budget goes alone. Returns each group's member count.
pub fn plan(sizes: impl IntoIterator<Item = usize>, per_group: usize, budget: usize) -> Vec<usize> {
    let per_group = per_group.max(1);
    let mut groups = Vec::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    for size in sizes {
        if count > 0 && (count == per_group || bytes + size > budget) {
            groups.push(count);
            (count, bytes) = (0, 0);
        }
        count += 1;
        bytes += size;
    }
    if count > 0 {
        groups.push(count);
    }
    groups
}

/// Splits `items` into the groups [`plan`] chose, keeping their order.
pub fn split<T>(items: Vec<T>, groups: &[usize]) -> Vec<Vec<T>> {
    let mut rest = items.into_iter();
    groups.iter().map(|&n| rest.by_ref().take(n).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_spread_over_the_workers_within_their_capacity() {
        assert_eq!(per_group(100, 3, 64), 34);
        assert_eq!(per_group(1000, 3, 64), 64);
        assert_eq!(per_group(5, 2, 2), 2);
        assert_eq!(per_group(0, 0, 0), 1);
    }

    #[test]
    fn groups_respect_the_count_and_the_bytes_and_a_large_member_goes_alone() {
        assert_eq!(plan([10; 7], 3, 1000), vec![3, 3, 1]);
        assert_eq!(plan([400, 400, 400], 10, 1000), vec![2, 1]);
        assert_eq!(plan([10, 5000, 10, 10], 10, 1000), vec![1, 1, 2]);
        assert_eq!(plan([5000], 10, 1000), vec![1]);
        assert!(plan(std::iter::empty(), 10, 1000).is_empty());
        let cut = split((0..7).collect(), &plan([10; 7], 3, 1000));
        assert_eq!(cut, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    }
}
