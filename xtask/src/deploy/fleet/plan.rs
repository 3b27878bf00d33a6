//! Which hosts a rollout moves when: the canaries first, on their own (the analysis judges them
//! before any other host moves), then the rest `--batch` at a time, in the order given.

use std::ops::Range;

#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Host indices, batch after batch.
    pub batches: Vec<Range<usize>>,
    /// How many of the first hosts are canaries (the first batch), 0 without analysis.
    pub canaries: usize,
}

impl Plan {
    pub fn new(hosts: usize, batch: usize, canaries: usize) -> Plan {
        let canaries = canaries.min(hosts);
        let mut batches = Vec::new();
        if canaries > 0 {
            batches.push(0..canaries);
        }
        let mut start = canaries;
        while start < hosts {
            let end = (start + batch.max(1)).min(hosts);
            batches.push(start..end);
            start = end;
        }
        Plan { batches, canaries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canaries_go_first_on_their_own_then_the_batches() {
        assert_eq!(Plan::new(5, 2, 0).batches, [0..2, 2..4, 4..5]);
        assert_eq!(Plan::new(5, 2, 1).batches, [0..1, 1..3, 3..5]);
        let all = Plan::new(3, 1, 3);
        assert_eq!((all.batches.len(), all.batches[0].clone()), (1, 0..3));
        let one = Plan::new(1, 1, 1);
        assert_eq!((one.batches.len(), one.canaries), (1, 1));
    }
}
