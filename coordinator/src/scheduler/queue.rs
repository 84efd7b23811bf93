//! The dispatch queue: the queued jobs in the order the dispatcher looks at
//! them, with an index by job.
//!
//! The order is critical-path first (the longest remaining path, its rank)
//! and then the oldest, kept as the key of an ordered map, so it is never
//! sorted again: a burst walks the front of the queue only as far as it can
//! place jobs, and a job leaves the queue in O(log n) when its state says so
//! (`runs.rs` removes it as the job's record changes). Issue 20's profile
//! showed the queue it replaces costing every burst O(queue): two `retain`
//! passes, a sort and a hint per queued job. With `--dispatch fifo` every
//! rank is 0, which leaves the order of arrival.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::core::machine::RunId;

/// A place in the queue: the larger rank first, then the earlier arrival.
pub(super) type Slot = (Reverse<u64>, u64);

#[derive(Debug, Default)]
pub(super) struct Queue {
    order: BTreeMap<Slot, (RunId, String)>,
    /// Each queued job's slot, by run then job (looked up by `&str`).
    index: HashMap<RunId, HashMap<String, Slot>>,
    next: u64,
    /// The slots queued since [`Queue::take_fresh`] was last called: the
    /// jobs that have no wait reason yet.
    fresh: Vec<Slot>,
}

impl Queue {
    /// Queues job `job` of run `run` with remaining path `rank`. A job
    /// already queued keeps its place.
    pub(super) fn push(&mut self, run: RunId, job: String, rank: u64) {
        let jobs = self.index.entry(run).or_default();
        if jobs.contains_key(&job) {
            return;
        }
        let slot = (Reverse(rank), self.next);
        self.next += 1;
        jobs.insert(job.clone(), slot);
        self.order.insert(slot, (run, job));
        self.fresh.push(slot);
    }

    /// Takes job `job` of run `run` out of the queue, if it is in it.
    pub(super) fn remove(&mut self, run: RunId, job: &str) {
        let Some(jobs) = self.index.get_mut(&run) else { return };
        let Some(slot) = jobs.remove(job) else { return };
        if jobs.is_empty() {
            self.index.remove(&run);
        }
        self.order.remove(&slot);
    }

    /// Takes every job of run `run` out of the queue.
    pub(super) fn remove_run(&mut self, run: RunId) {
        for slot in self.index.remove(&run).unwrap_or_default().into_values() {
            self.order.remove(&slot);
        }
    }

    /// Takes the entry at `slot` out of the queue.
    pub(super) fn remove_slot(&mut self, slot: Slot) {
        if let Some((run, job)) = self.order.get(&slot).cloned() {
            self.remove(run, &job);
        }
    }

    /// The entry at `slot`, if it is still queued.
    pub(super) fn get(&self, slot: Slot) -> Option<&(RunId, String)> {
        self.order.get(&slot)
    }

    /// The entries in the order to look at them.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Slot, &(RunId, String))> {
        self.order.iter().map(|(slot, entry)| (*slot, entry))
    }

    /// The entries after `slot` (all of them for `None`), in order.
    pub(super) fn after(&self, slot: Option<Slot>) -> impl Iterator<Item = (Slot, &(RunId, String))> {
        let from = slot.map_or(Bound::Unbounded, Bound::Excluded);
        self.order.range((from, Bound::Unbounded)).map(|(slot, entry)| (*slot, entry))
    }

    /// The slots queued since the last call (some may have left since).
    pub(super) fn take_fresh(&mut self) -> Vec<Slot> {
        std::mem::take(&mut self.fresh)
    }

    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(q: &Queue) -> Vec<String> {
        q.iter().map(|(_, (run, job))| format!("{run}/{job}")).collect()
    }

    /// A queue of `(run, job, rank)`, pushed in order.
    fn queue(entries: &[(RunId, &str, u64)]) -> Queue {
        let mut q = Queue::default();
        for (run, job, rank) in entries {
            q.push(*run, job.to_string(), *rank);
        }
        q
    }

    #[test]
    fn the_longest_remaining_path_goes_first_then_the_oldest() {
        let q = queue(&[(1, "lint", 1000), (1, "build", 5000), (2, "lint", 1000), (2, "build", 5000)]);
        assert_eq!(names(&q), ["1/build", "2/build", "1/lint", "2/lint"]);
        // All ranks 0 (fifo): the order of arrival.
        let fifo = queue(&[(2, "b", 0), (1, "a", 0), (2, "a", 0)]);
        assert_eq!(names(&fifo), ["2/b", "1/a", "2/a"]);
    }

    #[test]
    fn a_job_queued_again_keeps_its_place_and_leaves_once() {
        let mut q = queue(&[(1, "a", 0), (1, "b", 0), (1, "a", 0)]);
        assert_eq!(names(&q), ["1/a", "1/b"]);
        assert_eq!(q.take_fresh().len(), 2, "the repeat is not fresh");
        assert!(q.take_fresh().is_empty());
        q.remove(1, "a");
        q.remove(1, "a");
        q.remove(9, "a");
        assert_eq!(names(&q), ["1/b"]);
        // Queued again after it left: a new place at the back.
        q.push(1, "a".into(), 0);
        assert_eq!(names(&q), ["1/b", "1/a"]);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn entries_after_a_slot_and_whole_runs_leave() {
        let mut q = queue(&[(1, "a", 0), (2, "a", 0), (1, "b", 0), (3, "a", 0)]);
        let slots: Vec<Slot> = q.iter().map(|(s, _)| s).collect();
        let after: Vec<_> = q.after(Some(slots[1])).map(|(_, e)| e.clone()).collect();
        assert_eq!(after, [(1, "b".to_string()), (3, "a".to_string())]);
        assert_eq!(q.after(None).count(), 4);
        q.remove_run(1);
        assert_eq!(names(&q), ["2/a", "3/a"]);
        assert!(q.get(slots[0]).is_none());
        q.remove_slot(slots[1]);
        assert_eq!(names(&q), ["3/a"]);
        q.remove_slot(slots[1]);
        q.remove(3, "a");
        assert!(q.is_empty());
        assert!(q.index.is_empty(), "no run left behind in the index");
    }
}
