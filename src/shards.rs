//! Splitting a jobtype's known tests over shards so that the shards take
//! about the same time: longest-processing-time first over the recorded
//! durations, then the tests without a duration round-robin. Every known
//! test lands in exactly one shard.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// `tests` are (name, duration in ms if known); returns `shards` lists.
pub fn plan(tests: &[(String, Option<u64>)], shards: u32) -> Vec<Vec<String>> {
    let n = shards.max(1) as usize;
    let mut out: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut timed: Vec<(&str, u64)> = tests
        .iter()
        .filter_map(|(t, d)| d.map(|d| (t.as_str(), d)))
        .collect();
    // Longest first; ties by name so the plan is stable.
    timed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut load: BinaryHeap<Reverse<(u64, usize)>> = (0..n).map(|i| Reverse((0, i))).collect();
    for (name, d) in timed {
        let Reverse((total, i)) = load.pop().expect("at least one shard");
        out[i].push(name.to_string());
        load.push(Reverse((total + d, i)));
    }
    let mut untimed: Vec<&str> = tests
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(t, _)| t.as_str())
        .collect();
    untimed.sort_unstable();
    for (k, name) in untimed.into_iter().enumerate() {
        out[k % n].push(name.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_lands_in_exactly_one_shard() {
        let tests: Vec<(String, Option<u64>)> = (0..103)
            .map(|i| {
                (
                    format!("t{i}"),
                    if i % 5 == 0 { None } else { Some(i * 7 % 50) },
                )
            })
            .collect();
        let plan = plan(&tests, 4);
        assert_eq!(plan.len(), 4);
        let mut all: Vec<&String> = plan.iter().flatten().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 103);
    }

    #[test]
    fn longest_first_balances_skewed_durations() {
        // One long test and many short ones: the long one gets a shard of
        // its own and the rest share the others evenly.
        let mut tests = vec![("long".to_string(), Some(1000))];
        tests.extend((0..30).map(|i| (format!("s{i}"), Some(100))));
        let plan = plan(&tests, 4);
        let time = |shard: &Vec<String>| -> u64 {
            shard
                .iter()
                .map(|t| if t == "long" { 1000 } else { 100 })
                .sum()
        };
        let times: Vec<u64> = plan.iter().map(time).collect();
        assert_eq!(times.iter().sum::<u64>(), 4000);
        assert!(*times.iter().max().unwrap() <= 1000, "{times:?}");
        assert_eq!(
            plan.iter()
                .find(|s| s.contains(&"long".to_string()))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn untimed_tests_go_round_robin() {
        let tests: Vec<(String, Option<u64>)> = (0..8).map(|i| (format!("u{i}"), None)).collect();
        let plan = plan(&tests, 4);
        assert!(plan.iter().all(|s| s.len() == 2));
    }
}
