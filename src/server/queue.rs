//! The queued jobs in memory, in dispatch order, so a claim finds the best
//! job a worker can run without scanning the database: per jobtype, a map
//! ordered by (priority descending, id ascending), each entry holding its
//! requirements already parsed (and shared between jobs that have the
//! same ones).
//!
//! The database stays the truth: the store updates this index after each
//! change it commits, and a claim re-checks the job's state when it takes
//! it, so an entry that went stale is only ever skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::matching::{self, Condition};
use crate::wire::Props;

/// A job's requirements, parsed once.
#[derive(Debug)]
pub struct Requirements {
    pub props: Props,
    conditions: Vec<(String, Condition)>,
}

impl Requirements {
    fn new(props: Props) -> Requirements {
        let conditions = props
            .iter()
            .map(|(k, v)| {
                // Unparsable conditions were refused at submit; should one
                // be stored anyway, it matches nothing.
                let c = matching::parse_condition(v).unwrap_or(Condition::OneOf(Vec::new()));
                (k.clone(), c)
            })
            .collect();
        Requirements { props, conditions }
    }

    /// The first of `platforms` that meets every requirement.
    pub fn first_match(&self, platforms: &[Props]) -> Option<usize> {
        platforms.iter().position(|p| {
            self.conditions
                .iter()
                .all(|(k, c)| c.matches(p.get(k).map(String::as_str)))
        })
    }
}

/// Dispatch order: higher priority first, then older (lower id).
type Key = (i64, i64);

fn key(priority: i64, id: i64) -> Key {
    (priority.checked_neg().unwrap_or(i64::MAX), id)
}

#[derive(Debug)]
struct Entry {
    reqs: Arc<Requirements>,
    /// Keep away from this worker until then (after it failed the job for
    /// infrastructure reasons).
    avoid: Option<(String, i64)>,
}

/// What a worker brings to a claim.
pub struct Claimant<'a> {
    pub name: &'a str,
    pub jobtypes: &'a [String],
    pub platforms: &'a [Props],
    pub accept: &'a [(String, String)],
}

#[derive(Default)]
pub struct QueueIndex {
    by_jobtype: HashMap<String, BTreeMap<Key, Entry>>,
    /// id -> (jobtype, key), to find an entry by job.
    where_is: HashMap<i64, (String, Key)>,
    /// Requirement sets by their JSON text, shared between jobs.
    interned: HashMap<String, Arc<Requirements>>,
}

/// A queued job as the index needs it.
pub struct Queued {
    pub id: i64,
    pub jobtype: String,
    pub priority: i64,
    /// The requirements as stored (JSON).
    pub platform_json: String,
    pub avoid: Option<(String, i64)>,
}

impl QueueIndex {
    pub fn len(&self) -> usize {
        self.where_is.len()
    }

    pub fn is_empty(&self) -> bool {
        self.where_is.is_empty()
    }

    /// Whether any job of this jobtype is queued.
    pub fn has_jobtype(&self, jobtype: &str) -> bool {
        self.by_jobtype.contains_key(jobtype)
    }

    fn intern(&mut self, json: &str) -> Arc<Requirements> {
        if let Some(r) = self.interned.get(json) {
            return r.clone();
        }
        let props: Props = serde_json::from_str(json).unwrap_or_default();
        let r = Arc::new(Requirements::new(props));
        // Requirement sets no queued job uses any more are let go now and
        // then, so the table stays as small as the variety of the queue.
        if self.interned.len() > 4096 {
            self.interned.retain(|_, r| Arc::strong_count(r) > 1);
        }
        self.interned.insert(json.to_string(), r.clone());
        r
    }

    /// Adds a queued job, or updates it.
    pub fn insert(&mut self, q: Queued) {
        self.remove(q.id);
        let reqs = self.intern(&q.platform_json);
        let k = key(q.priority, q.id);
        self.by_jobtype
            .entry(q.jobtype.clone())
            .or_default()
            .insert(
                k,
                Entry {
                    reqs,
                    avoid: q.avoid,
                },
            );
        self.where_is.insert(q.id, (q.jobtype, k));
    }

    /// Drops a job (claimed, canceled, no longer queued).
    pub fn remove(&mut self, id: i64) {
        if let Some((jobtype, k)) = self.where_is.remove(&id) {
            if let Some(m) = self.by_jobtype.get_mut(&jobtype) {
                m.remove(&k);
                if m.is_empty() {
                    self.by_jobtype.remove(&jobtype);
                }
            }
        }
    }

    /// The best job the worker can run: highest priority, then oldest, over
    /// all its jobtypes; with the index of its platform that fits.
    pub fn best_for(&self, w: &Claimant, now: i64) -> Option<(i64, usize)> {
        let mut best: Option<(Key, usize)> = None;
        for jobtype in w.jobtypes {
            let Some(m) = self.by_jobtype.get(jobtype) else {
                continue;
            };
            for (k, e) in m {
                if best.is_some_and(|(b, _)| *k > b) {
                    break;
                }
                if e.avoid
                    .as_ref()
                    .is_some_and(|(n, until)| n == w.name && *until > now)
                {
                    continue;
                }
                if !matching::job_accepted(&e.reqs.props, w.accept) {
                    continue;
                }
                if let Some(i) = e.reqs.first_match(w.platforms) {
                    best = Some((*k, i));
                    break;
                }
            }
        }
        best.map(|((_, id), i)| (id, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: i64, jobtype: &str, priority: i64, platform: &str) -> Queued {
        Queued {
            id,
            jobtype: jobtype.into(),
            priority,
            platform_json: platform.into(),
            avoid: None,
        }
    }

    fn props(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn priority_then_age_then_fit() {
        let mut idx = QueueIndex::default();
        idx.insert(q(1, "unit", 0, "{}"));
        idx.insert(q(2, "unit", 5, r#"{"os":"windows"}"#));
        idx.insert(q(3, "lint", 5, "{}"));
        idx.insert(q(4, "unit", 5, "{}"));
        let platforms = vec![props(&[("os", "linux")])];
        let types = vec!["unit".to_string(), "lint".to_string()];
        let w = Claimant {
            name: "w",
            jobtypes: &types,
            platforms: &platforms,
            accept: &[],
        };
        // 2 does not fit; 3 and 4 share priority 5 and 3 is older.
        assert_eq!(idx.best_for(&w, 0), Some((3, 0)));
        idx.remove(3);
        assert_eq!(idx.best_for(&w, 0), Some((4, 0)));
        idx.remove(4);
        assert_eq!(idx.best_for(&w, 0), Some((1, 0)));
        idx.remove(1);
        assert_eq!(idx.best_for(&w, 0), None);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn avoided_workers_and_accept_rules() {
        let mut idx = QueueIndex::default();
        let mut job = q(1, "unit", 0, r#"{"pool":"release"}"#);
        job.avoid = Some(("w".into(), 100));
        idx.insert(job);
        let platforms = vec![props(&[("pool", "release")])];
        let types = vec!["unit".to_string()];
        let accept = vec![("pool".to_string(), "release".to_string())];
        let w = Claimant {
            name: "w",
            jobtypes: &types,
            platforms: &platforms,
            accept: &accept,
        };
        assert_eq!(idx.best_for(&w, 50), None);
        assert_eq!(idx.best_for(&w, 150), Some((1, 0)));
        idx.insert(q(2, "unit", 9, "{}"));
        // Job 2 does not ask for pool=release: the reserved worker skips it.
        assert_eq!(idx.best_for(&w, 150), Some((1, 0)));
    }
}
