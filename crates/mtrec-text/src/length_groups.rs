//! The texts of a batch split into groups of similar length, so that the encoder pads each group
//! only to its own longest text.
//!
//! A transformer's work grows with the padded positions: a batch cut to its longest text runs
//! `B · L_max` token rows through every projection and feed-forward product, and reviews' lengths
//! spread widely (on wcr-mtl a batch of 32 is cut to about its one long review while most are
//! shorter), so a large share of the rows is padding whose results are thrown away. Each text's
//! forward depends on its own tokens only (attention masks the padding; pooling averages the text's
//! own tokens), so the batch can be run as groups, each padded to its own longest text, and the
//! sentence embeddings put back in the batch's order: the same values, with less padding (dropout
//! draws its masks group by group, from the same generator). [`length_groups`] chooses the groups
//! that minimise the padded rows plus a fixed cost a group (a group's own kernel calls, and the
//! smaller products' lower efficiency), exactly, by dynamic programming over the texts sorted by
//! length.

/// The fixed cost of one more group, in token rows: a group is split off when it saves at least
/// this many padded rows.
pub const GROUP_COST_ROWS: usize = 128;

/// Groups of the row indices of texts of `lengths` tokens (each group ascending by length, the
/// groups from the shortest texts to the longest) minimising `Σ_g (|g| · max_{i∈g} lengths[i] +
/// group_cost)`. Every row is in exactly one group; an empty batch has none.
pub fn length_groups(lengths: &[usize], group_cost: usize) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    // best[j]: the least cost of the first j sorted texts; start[j]: where its last group starts
    let mut best = vec![0usize; n + 1];
    let mut start = vec![0usize; n + 1];
    for j in 1..=n {
        let longest = lengths[order[j - 1]];
        let (cost, from) =
            (0..j).map(|i| (best[i] + (j - i) * longest + group_cost, i)).min().expect("at least one split point");
        best[j] = cost;
        start[j] = from;
    }
    let mut groups = Vec::new();
    let mut end = n;
    while end > 0 {
        groups.push(order[start[end]..end].to_vec());
        end = start[end];
    }
    groups.reverse();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: three short texts and one long one split (3·10 + 20 + 100 + 20 = 170 against
    /// one group's 4·100 + 20 = 420); equal lengths stay one group; a cost larger than any saving
    /// keeps one group; every row appears once.
    #[test]
    fn groups_by_hand() {
        assert_eq!(length_groups(&[100, 10, 10, 10], 20), vec![vec![1, 2, 3], vec![0]]);
        assert_eq!(length_groups(&[7, 7, 7], 1), vec![vec![0, 1, 2]]);
        assert_eq!(length_groups(&[100, 10, 10, 10], 1000), vec![vec![1, 2, 3, 0]]);
        assert!(length_groups(&[], 5).is_empty());
        // 2 texts of 10 and 2 of 30 and 1 of 31, cost 5: {10,10} {30,30,31} = 20+5 + 93+5 = 123;
        // {10,10} {30,30} {31} = 25 + 65 + 36 = 126; one group 155 + 5 = 160
        assert_eq!(length_groups(&[30, 10, 31, 10, 30], 5), vec![vec![1, 3], vec![0, 4, 2]]);
        let lengths: Vec<usize> = (0..200).map(|i| (i * 37) % 128).collect();
        let mut seen: Vec<usize> = length_groups(&lengths, 128).concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
    }
}
