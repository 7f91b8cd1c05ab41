//! The run's resource budget: named resources with integer units, and the grants workers hold.
//!
//! A pure allocator (no threads, clocks or I/O); the runners decide *when* to start and retire
//! workers, this module decides *whether* a worker fits and *which* units it gets.
//!
//! * A [`Budget`] is built from the run's totals (`Runner::resources`: name → units) and named
//!   units (`Runner::devices`: name → ids). Any name is a resource; its units are counted. A
//!   resource with ids hands out ids too: the resource named [`GPU`] has ids `"0"..` `"n-1"` by
//!   default, any resource can be given a list. [`Budget::new`] refuses empty or duplicate
//!   names, a total that differs from the number of ids, empty, comma-holding or duplicate ids,
//!   and default GPU ids beyond [`MAX_DEFAULT_DEVICES`].
//! * A [`Requirement`] is what one worker of a task needs (`TaskBuilder::requires`). Zero units
//!   mean nothing.
//! * [`Budget::check`]: with a budget, a task whose worker needs more units than the budget has,
//!   or a resource the budget does not have at all (most likely a typo), is an error before any
//!   block runs. daisy 2.0 does the same (a resource missing from its budget counts as 0 units,
//!   so its validation fails); we name the budget's resources in the message. Without a budget
//!   ([`Budget::is_empty`]), requirements are ignored: every check passes and every take
//!   succeeds with an empty grant, so a task written for a GPU cluster still runs on a laptop.
//! * [`Budget::try_take`] takes all the units of a requirement or none. A resource's ids are
//!   handed out lowest first (by position in the user's list, numerically for default GPU
//!   ids), an id is in at most one live [`Grant`], and [`Budget::give_back`] returns a grant's
//!   units and ids (a `Grant` is not `Clone`, so it is given back at most once).

use std::collections::BTreeSet;

use crate::error::ResourceError;

/// The resource whose units are GPUs: ids `"0"`.. by default, handed to worker processes in
/// [`CUDA_VISIBLE_DEVICES`], and to worker threads as `WorkerContext::devices()`.
pub(crate) const GPU: &str = "gpu";

/// The environment variable a worker process's GPU ids are given in (see [`Grant::env`]).
pub(crate) const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// The most units the [`GPU`] resource may have without an id list (its ids are made up).
pub(crate) const MAX_DEFAULT_DEVICES: u64 = 1 << 16;

/// `(resource, units)` pairs as the budget keeps them, from what a setter takes.
pub(crate) fn unit_list(
    units: impl IntoIterator<Item = (impl Into<String>, u64)>,
) -> Vec<(String, u64)> {
    units.into_iter().map(|(n, u)| (n.into(), u)).collect()
}

/// A resource's named units (device ids) as the budget keeps them, from what a setter takes.
pub(crate) fn id_list(
    resource: impl Into<String>,
    ids: impl IntoIterator<Item = impl Into<String>>,
) -> (String, Vec<String>) {
    (resource.into(), ids.into_iter().map(Into::into).collect())
}

/// What one worker of a task needs: units per resource, by name (sorted, each name once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Requirement {
    units: Vec<(String, u64)>,
}

impl Requirement {
    /// A requirement from `(resource, units)` pairs, in any order.
    ///
    /// # Errors
    ///
    /// The reason, when a name is empty or given twice.
    pub(crate) fn new(
        units: impl IntoIterator<Item = (String, u64)>,
    ) -> Result<Requirement, String> {
        let mut units: Vec<(String, u64)> = units.into_iter().collect();
        units.sort_by(|a, b| a.0.cmp(&b.0));
        if units.iter().any(|(name, _)| name.is_empty()) {
            return Err("a required resource has an empty name".to_owned());
        }
        if let Some(w) = units.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!(
                "resource {:?} is required twice; give each resource once",
                w[0].0
            ));
        }
        Ok(Requirement { units })
    }

    /// The `(resource, units)` pairs as given, sorted by name.
    pub(crate) fn as_slice(&self) -> &[(String, u64)] {
        &self.units
    }

    /// Whether the requirement needs nothing (no resource, or zero units of each).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.needs().next().is_none()
    }

    /// The resources with positive units.
    fn needs(&self) -> impl Iterator<Item = (&str, u64)> {
        self.units
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name.as_str(), *n))
    }

    /// Whether one worker needs any of `resource`.
    pub(crate) fn uses(&self, resource: &str) -> bool {
        self.needs().any(|(name, _)| name == resource)
    }

    /// Whether this requirement and `other` need some resource in common.
    pub(crate) fn overlaps(&self, other: &Requirement) -> bool {
        self.needs().any(|(name, _)| other.uses(name))
    }
}

/// How a resource's units are named.
#[derive(Debug)]
enum Ids {
    /// Counted units, without ids.
    Counted,
    /// The default ids of the [`GPU`] resource: `"0"`, `"1"`, ...
    Numbered,
    /// The ids the user gave, in order.
    Named(Vec<String>),
}

/// One resource of the budget.
#[derive(Debug)]
struct Pool {
    name: String,
    total: u64,
    used: u64,
    ids: Ids,
    /// Positions below `fresh` that were given back and are free again.
    returned: BTreeSet<u64>,
    /// Every position from here to `total` is free (and has never been taken since it last
    /// came back).
    fresh: u64,
}

impl Pool {
    fn new(name: String, total: u64, ids: Ids) -> Pool {
        Pool {
            name,
            total,
            used: 0,
            ids,
            returned: BTreeSet::new(),
            fresh: 0,
        }
    }

    fn has_ids(&self) -> bool {
        !matches!(self.ids, Ids::Counted)
    }

    fn id(&self, position: u64) -> String {
        match &self.ids {
            Ids::Named(ids) => usize::try_from(position)
                .ok()
                .and_then(|p| ids.get(p))
                .cloned()
                .unwrap_or_default(),
            Ids::Counted | Ids::Numbered => position.to_string(),
        }
    }

    /// The `n` lowest free positions (the caller checked that `n` units are free).
    fn take_positions(&mut self, n: u64) -> Vec<u64> {
        let mut taken = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for _ in 0..n {
            // Every returned position is below `fresh`, so the lowest free one is the first
            // returned position if there is one.
            match self.returned.pop_first() {
                Some(p) => taken.push(p),
                None if self.fresh < self.total => {
                    taken.push(self.fresh);
                    self.fresh += 1;
                }
                None => break,
            }
        }
        taken
    }

    fn give_back_positions(&mut self, positions: &[u64]) {
        for &p in positions {
            if p < self.fresh {
                self.returned.insert(p);
            }
        }
        // Keep `returned` to the positions below the highest one taken.
        while self.fresh > 0 && self.returned.remove(&(self.fresh - 1)) {
            self.fresh -= 1;
        }
    }
}

/// The run's resource budget (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// Sorted by name.
    pools: Vec<Pool>,
    /// The index of the [`GPU`] pool.
    gpu: Option<usize>,
}

/// The units (and ids) one worker holds; give it back with [`Budget::give_back`].
#[derive(Debug)]
#[must_use = "a grant's units are held until it is given back"]
pub(crate) struct Grant {
    parts: Vec<Part>,
    /// The index of the [`GPU`] part, if the worker holds GPUs.
    gpu_part: Option<usize>,
    /// Whether the budget has a [`GPU`] resource (then a worker without GPUs sees none).
    gpu_budget: bool,
}

/// The units of one resource in a grant.
#[derive(Debug)]
struct Part {
    pool: usize,
    units: u64,
    /// The positions of its ids in the pool (empty for counted units).
    positions: Vec<u64>,
    ids: Vec<String>,
}

impl Grant {
    /// The worker's [`GPU`] ids (empty when it holds none).
    pub(crate) fn devices(&self) -> &[String] {
        self.gpu_part.map_or(&[], |i| &self.parts[i].ids)
    }

    /// The ids of `resource` the worker holds (empty for counted units or none).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn ids(&self, resource: &str, budget: &Budget) -> Vec<String> {
        self.parts
            .iter()
            .filter(|p| {
                budget
                    .pools
                    .get(p.pool)
                    .is_some_and(|pool| pool.name == resource)
            })
            .flat_map(|p| p.ids.iter().cloned())
            .collect()
    }

    /// The environment of a worker process holding this grant: `CUDA_VISIBLE_DEVICES` set to
    /// its GPU ids joined by commas, empty when the budget has GPUs and the worker holds none
    /// (so a CPU worker does not use a GPU another worker holds); nothing when the budget has
    /// no [`GPU`] resource.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        if !self.gpu_budget {
            return Vec::new();
        }
        vec![(CUDA_VISIBLE_DEVICES.to_owned(), self.devices().join(","))]
    }

    /// The units of each resource held, by pool.
    #[cfg(test)]
    fn units(&self) -> impl Iterator<Item = (usize, u64, &[u64])> {
        self.parts
            .iter()
            .map(|p| (p.pool, p.units, p.positions.as_slice()))
    }
}

impl Budget {
    /// A budget from the run's totals (`name → units`) and named units (`name → ids`; a
    /// resource given only here has as many units as ids). The [`GPU`] resource without ids
    /// gets ids `"0"..`.
    ///
    /// # Errors
    ///
    /// [`ResourceError`] naming the resource: an empty name, a name given twice (in either
    /// list), a total that differs from its number of ids, an empty or comma-holding id, an id
    /// given twice, or a [`GPU`] total without ids above [`MAX_DEFAULT_DEVICES`].
    pub(crate) fn new(
        totals: &[(String, u64)],
        devices: &[(String, Vec<String>)],
    ) -> Result<Budget, ResourceError> {
        let mut names: Vec<&str> = Vec::with_capacity(totals.len() + devices.len());
        for list in [
            totals.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            devices.iter().map(|(n, _)| n.as_str()).collect(),
        ] {
            let mut list = list;
            list.sort_unstable();
            if list.iter().any(|n| n.is_empty()) {
                return Err(ResourceError::EmptyName);
            }
            if let Some(w) = list.windows(2).find(|w| w[0] == w[1]) {
                return Err(ResourceError::DuplicateResource {
                    resource: w[0].to_owned(),
                });
            }
            names.extend(list);
        }
        names.sort_unstable();
        names.dedup();
        let mut pools = Vec::with_capacity(names.len());
        for name in names {
            let total = totals.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
            let ids = devices.iter().find(|(n, _)| n == name).map(|(_, ids)| ids);
            let pool = match (total, ids) {
                (_, Some(ids)) => {
                    if let Some(total) = total
                        && u64::try_from(ids.len()).ok() != Some(total)
                    {
                        return Err(ResourceError::DeviceCount {
                            resource: name.to_owned(),
                            total,
                            ids: ids.len(),
                        });
                    }
                    let mut sorted: Vec<&String> = ids.iter().collect();
                    sorted.sort_unstable();
                    if let Some(bad) = sorted.iter().find(|id| id.is_empty() || id.contains(',')) {
                        return Err(ResourceError::InvalidDevice {
                            resource: name.to_owned(),
                            id: (*bad).clone(),
                        });
                    }
                    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                        return Err(ResourceError::DuplicateDevice {
                            resource: name.to_owned(),
                            id: w[0].clone(),
                        });
                    }
                    let total = u64::try_from(ids.len()).unwrap_or(u64::MAX);
                    Pool::new(name.to_owned(), total, Ids::Named(ids.clone()))
                }
                (Some(total), None) if name == GPU => {
                    if total > MAX_DEFAULT_DEVICES {
                        return Err(ResourceError::TooManyDevices {
                            resource: name.to_owned(),
                            total,
                            max: MAX_DEFAULT_DEVICES,
                        });
                    }
                    Pool::new(name.to_owned(), total, Ids::Numbered)
                }
                (total, None) => Pool::new(name.to_owned(), total.unwrap_or(0), Ids::Counted),
            };
            pools.push(pool);
        }
        let gpu = pools.iter().position(|p| p.name == GPU);
        Ok(Budget { pools, gpu })
    }

    /// Whether the run has no budget (no resource at all): requirements are then ignored.
    pub(crate) fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    fn pool(&self, name: &str) -> Option<usize> {
        self.pools
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
    }

    /// Whether one worker of `task` can ever fit (with nothing else running).
    ///
    /// # Errors
    ///
    /// [`ResourceError::UnknownResource`] for a needed resource the budget does not have,
    /// [`ResourceError::Exceeds`] for one of which it has fewer units than one worker needs.
    /// Without a budget, never.
    pub(crate) fn check(&self, task: &str, need: &Requirement) -> Result<(), ResourceError> {
        if self.is_empty() {
            return Ok(());
        }
        for (name, units) in need.needs() {
            let Some(i) = self.pool(name) else {
                return Err(ResourceError::UnknownResource {
                    task: task.to_owned(),
                    resource: name.to_owned(),
                    need: units,
                    budget: self.pools.iter().map(|p| p.name.clone()).collect(),
                });
            };
            let have = self.pools[i].total;
            if units > have {
                return Err(ResourceError::Exceeds {
                    task: task.to_owned(),
                    resource: name.to_owned(),
                    need: units,
                    have,
                });
            }
        }
        Ok(())
    }

    /// Takes the units (and ids, lowest first) of one worker: all of them, or none (`None`)
    /// when some resource has too few free units or is not in the budget. Without a budget,
    /// an empty grant.
    pub(crate) fn try_take(&mut self, need: &Requirement) -> Option<Grant> {
        let mut wanted: Vec<(usize, u64)> = Vec::new();
        if !self.is_empty() {
            for (name, units) in need.needs() {
                let i = self.pool(name)?;
                let pool = &self.pools[i];
                if pool.total - pool.used < units {
                    return None;
                }
                wanted.push((i, units));
            }
        }
        let mut parts = Vec::with_capacity(wanted.len());
        let mut gpu_part = None;
        for (i, units) in wanted {
            let pool = &mut self.pools[i];
            pool.used += units;
            let (positions, ids) = if pool.has_ids() {
                let positions = pool.take_positions(units);
                let ids = positions.iter().map(|&p| pool.id(p)).collect();
                (positions, ids)
            } else {
                (Vec::new(), Vec::new())
            };
            if Some(i) == self.gpu {
                gpu_part = Some(parts.len());
            }
            parts.push(Part {
                pool: i,
                units,
                positions,
                ids,
            });
        }
        Some(Grant {
            parts,
            gpu_part,
            gpu_budget: self.gpu.is_some(),
        })
    }

    /// Returns a grant's units and ids to the budget (its ids are handed out again, lowest
    /// first).
    pub(crate) fn give_back(&mut self, grant: Grant) {
        for part in grant.parts {
            if let Some(pool) = self.pools.get_mut(part.pool) {
                pool.used = pool.used.saturating_sub(part.units);
                pool.give_back_positions(&part.positions);
            }
        }
    }

    /// The units of `resource` held by live grants, `None` if the budget does not have it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn in_use(&self, resource: &str) -> Option<u64> {
        self.pool(resource).map(|i| self.pools[i].used)
    }

    /// The units `resource` has, `None` if the budget does not have it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn total(&self, resource: &str) -> Option<u64> {
        self.pool(resource).map(|i| self.pools[i].total)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn totals(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(n, u)| ((*n).to_owned(), *u)).collect()
    }

    fn devices(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(n, ids)| {
                (
                    (*n).to_owned(),
                    ids.iter().map(|id| (*id).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn req(list: &[(&str, u64)]) -> Requirement {
        Requirement::new(totals(list)).unwrap()
    }

    #[test]
    fn requirements_are_sorted_and_refuse_empty_or_repeated_names() {
        let r = req(&[("gpu", 1), ("cpu", 4)]);
        assert_eq!(r.as_slice(), [("cpu".to_owned(), 4), ("gpu".to_owned(), 1)]);
        assert!(!r.is_empty());
        assert!(req(&[("gpu", 0)]).is_empty());
        let e = Requirement::new(totals(&[("cpu", 1), ("cpu", 2)])).unwrap_err();
        assert!(e.contains("\"cpu\"") && e.contains("twice"), "{e}");
        let e = Requirement::new(totals(&[("", 1)])).unwrap_err();
        assert!(e.contains("empty name"), "{e}");
    }

    #[test]
    fn budgets_refuse_bad_input_naming_it() {
        let err = |t: &[(&str, u64)], d: &[(&str, &[&str])]| {
            Budget::new(&totals(t), &devices(d)).unwrap_err()
        };
        assert_eq!(err(&[("", 1)], &[]), ResourceError::EmptyName);
        assert_eq!(err(&[], &[("", &["a"])]), ResourceError::EmptyName);
        assert_eq!(
            err(&[("cpu", 1), ("cpu", 2)], &[]),
            ResourceError::DuplicateResource {
                resource: "cpu".into()
            }
        );
        assert_eq!(
            err(&[], &[("gpu", &["0"]), ("gpu", &["1"])]),
            ResourceError::DuplicateResource {
                resource: "gpu".into()
            }
        );
        assert_eq!(
            err(&[("gpu", 4)], &[("gpu", &["0", "1"])]),
            ResourceError::DeviceCount {
                resource: "gpu".into(),
                total: 4,
                ids: 2
            }
        );
        assert_eq!(
            err(&[], &[("gpu", &["0", "1", "0"])]),
            ResourceError::DuplicateDevice {
                resource: "gpu".into(),
                id: "0".into()
            }
        );
        assert_eq!(
            err(&[], &[("gpu", &["0", ""])]),
            ResourceError::InvalidDevice {
                resource: "gpu".into(),
                id: String::new()
            }
        );
        assert_eq!(
            err(&[], &[("gpu", &["0,1"])]),
            ResourceError::InvalidDevice {
                resource: "gpu".into(),
                id: "0,1".into()
            }
        );
        assert_eq!(
            err(&[("gpu", MAX_DEFAULT_DEVICES + 1)], &[]),
            ResourceError::TooManyDevices {
                resource: "gpu".into(),
                total: MAX_DEFAULT_DEVICES + 1,
                max: MAX_DEFAULT_DEVICES
            }
        );
        // The same count in both lists, or a large counted resource, is fine.
        let b = Budget::new(
            &totals(&[("gpu", 2), ("mem", u64::MAX)]),
            &devices(&[("gpu", &["3", "5"])]),
        )
        .unwrap();
        assert_eq!(b.total("gpu"), Some(2));
        assert_eq!(b.total("mem"), Some(u64::MAX));
    }

    #[test]
    fn checks_name_the_task_the_resource_and_the_units() {
        let b = Budget::new(&totals(&[("cpu", 8), ("gpu", 2)]), &[]).unwrap();
        assert_eq!(b.check("predict", &req(&[("gpu", 2), ("cpu", 4)])), Ok(()));
        let e = b.check("predict", &req(&[("gpu", 3)])).unwrap_err();
        assert_eq!(
            e,
            ResourceError::Exceeds {
                task: "predict".into(),
                resource: "gpu".into(),
                need: 3,
                have: 2
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("\"predict\"") && text.contains("3 units") && text.contains("only 2")
        );
        let e = b.check("predict", &req(&[("gpus", 1)])).unwrap_err();
        assert!(
            matches!(&e, ResourceError::UnknownResource { resource, .. } if resource == "gpus")
        );
        assert!(e.to_string().contains("it has: cpu, gpu"), "{e}");
        // Zero units of an unknown resource mean nothing.
        assert_eq!(b.check("t", &req(&[("fpga", 0)])), Ok(()));
        // A resource with zero units exists: needing it exceeds it.
        let none = Budget::new(&totals(&[("gpu", 0)]), &[]).unwrap();
        assert!(matches!(
            none.check("t", &req(&[("gpu", 1)])),
            Err(ResourceError::Exceeds { have: 0, .. })
        ));
    }

    #[test]
    fn without_a_budget_requirements_are_ignored() {
        let mut b = Budget::new(&[], &[]).unwrap();
        assert!(b.is_empty());
        let need = req(&[("gpu", 8)]);
        assert_eq!(b.check("t", &need), Ok(()));
        let grants: Vec<Grant> = (0..100).map(|_| b.try_take(&need).unwrap()).collect();
        assert!(
            grants
                .iter()
                .all(|g| g.devices().is_empty() && g.env().is_empty())
        );
        for g in grants {
            b.give_back(g);
        }
    }

    #[test]
    fn takes_are_all_or_nothing_and_ids_come_back_lowest_first() {
        let mut b = Budget::new(&totals(&[("cpu", 4), ("gpu", 2)]), &[]).unwrap();
        let gpu = req(&[("gpu", 1), ("cpu", 2)]);
        let g0 = b.try_take(&gpu).unwrap();
        let g1 = b.try_take(&gpu).unwrap();
        assert_eq!(
            (g0.devices(), g1.devices()),
            (&["0".to_owned()][..], &["1".to_owned()][..])
        );
        assert_eq!(
            g1.env(),
            [("CUDA_VISIBLE_DEVICES".to_owned(), "1".to_owned())]
        );
        // cpu is used up: a cpu-only worker does not fit, and nothing was taken.
        assert!(b.try_take(&req(&[("cpu", 1)])).is_none());
        assert_eq!((b.in_use("cpu"), b.in_use("gpu")), (Some(4), Some(2)));
        b.give_back(g0);
        assert_eq!((b.in_use("cpu"), b.in_use("gpu")), (Some(2), Some(1)));
        // A CPU worker holds no GPU, and is told so.
        let cpu = b.try_take(&req(&[("cpu", 1)])).unwrap();
        assert!(cpu.devices().is_empty());
        assert_eq!(
            cpu.env(),
            [("CUDA_VISIBLE_DEVICES".to_owned(), String::new())]
        );
        // gpu 0 came back and is the lowest free id; cpu is short by one, so nothing is taken.
        assert!(b.try_take(&gpu).is_none());
        assert_eq!(b.in_use("gpu"), Some(1));
        b.give_back(cpu);
        let g2 = b.try_take(&gpu).unwrap();
        assert_eq!(g2.devices(), ["0"]);
        b.give_back(g1);
        b.give_back(g2);
        assert_eq!((b.in_use("cpu"), b.in_use("gpu")), (Some(0), Some(0)));
        // A resource the budget does not have never fits.
        assert!(b.try_take(&req(&[("fpga", 1)])).is_none());
    }

    #[test]
    fn named_ids_are_handed_out_in_the_users_order() {
        let mut b = Budget::new(
            &[],
            &devices(&[("gpu", &["7", "3", "5"]), ("fpga", &["a", "b"])]),
        )
        .unwrap();
        let two = b.try_take(&req(&[("gpu", 2), ("fpga", 1)])).unwrap();
        assert_eq!(two.devices(), ["7", "3"]);
        assert_eq!(two.ids("fpga", &b), ["a"]);
        assert_eq!(
            two.env(),
            [("CUDA_VISIBLE_DEVICES".to_owned(), "7,3".to_owned())]
        );
        let one = b.try_take(&req(&[("gpu", 1)])).unwrap();
        assert_eq!(one.devices(), ["5"]);
        b.give_back(two);
        let again = b.try_take(&req(&[("gpu", 1)])).unwrap();
        assert_eq!(again.devices(), ["7"]);
        // Counted resources have no ids; a budget without gpu sets no environment.
        let mut c = Budget::new(&totals(&[("cpu", 2)]), &[]).unwrap();
        let g = c.try_take(&req(&[("cpu", 2)])).unwrap();
        assert!(g.devices().is_empty() && g.ids("cpu", &c).is_empty() && g.env().is_empty());
    }

    /// One step of a random sequence: take for requirement `i`, or give back live grant `i`
    /// (modulo the number of live grants).
    #[derive(Debug, Clone)]
    enum Op {
        Take(usize),
        GiveBack(usize),
    }

    const NAMES: [&str; 4] = ["cpu", "gpu", "mem", "fpga"];

    /// The two lists `Budget::new` takes.
    type Lists = (Vec<(String, u64)>, Vec<(String, Vec<String>)>);

    /// A budget: some of the names with 0..6 units, each named (ids) or not.
    fn budget_strategy() -> impl Strategy<Value = Lists> {
        proptest::collection::vec((0u64..6, any::<bool>(), any::<bool>()), NAMES.len()).prop_map(
            |spec| {
                let mut t = Vec::new();
                let mut d = Vec::new();
                for (name, (units, present, named)) in NAMES.iter().zip(spec) {
                    if !present {
                        continue;
                    }
                    if named {
                        d.push((
                            (*name).to_owned(),
                            (0..units).map(|i| format!("{name}{}", 10 - i)).collect(),
                        ));
                    } else {
                        t.push(((*name).to_owned(), units));
                    }
                }
                (t, d)
            },
        )
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        proptest::collection::vec(proptest::option::of(0u64..4), NAMES.len()).prop_map(|units| {
            Requirement::new(
                NAMES
                    .iter()
                    .zip(units)
                    .filter_map(|(n, u)| u.map(|u| ((*n).to_owned(), u))),
            )
            .unwrap()
        })
    }

    proptest! {
        /// Over random budgets, requirements and take/give sequences: a take succeeds exactly
        /// when every needed resource has the free units, units in use never exceed totals and
        /// equal what live grants hold, no id is in two live grants, ids are the lowest free
        /// ones, and once everything is given back every unit and id is free again.
        #[test]
        fn units_and_ids_are_never_oversubscribed(
            (t, d) in budget_strategy(),
            reqs in proptest::collection::vec(requirement_strategy(), 1..5),
            ops in proptest::collection::vec(
                prop_oneof![(0usize..8).prop_map(Op::Take), (0usize..8).prop_map(Op::GiveBack)],
                0..60,
            ),
        ) {
            let mut b = Budget::new(&t, &d).unwrap();
            let n = b.pools.len();
            let mut live: Vec<Grant> = Vec::new();
            // The model: free positions per pool (for pools with ids) and free units.
            let mut free: Vec<BTreeSet<u64>> =
                b.pools.iter().map(|p| if p.has_ids() { (0..p.total).collect() } else { BTreeSet::new() }).collect();
            let mut free_units: Vec<u64> = b.pools.iter().map(|p| p.total).collect();
            for op in ops {
                match op {
                    Op::Take(i) => {
                        let need = &reqs[i % reqs.len()];
                        let fits = b.is_empty() || need.needs().all(|(name, u)| {
                            b.pool(name).is_some_and(|p| free_units[p] >= u)
                        });
                        let got = b.try_take(need);
                        prop_assert_eq!(got.is_some(), fits);
                        if let Some(g) = got {
                            for (pool, units, positions) in g.units() {
                                prop_assert!(free_units[pool] >= units);
                                free_units[pool] -= units;
                                if b.pools[pool].has_ids() {
                                    prop_assert_eq!(positions.len() as u64, units);
                                    // The lowest free positions, in order.
                                    let lowest: Vec<u64> = free[pool].iter().copied().take(positions.len()).collect();
                                    prop_assert_eq!(positions, &lowest[..]);
                                    for p in positions {
                                        prop_assert!(free[pool].remove(p), "position {} handed out twice", p);
                                    }
                                } else {
                                    prop_assert!(positions.is_empty());
                                }
                            }
                            if b.gpu.is_some() {
                                prop_assert_eq!(g.env().len(), 1);
                            }
                            live.push(g);
                        }
                    }
                    Op::GiveBack(i) => {
                        if !live.is_empty() {
                            let g = live.swap_remove(i % live.len());
                            for (pool, units, positions) in g.units() {
                                free_units[pool] += units;
                                free[pool].extend(positions.iter().copied());
                            }
                            b.give_back(g);
                        }
                    }
                }
                #[allow(clippy::needless_range_loop)] // `p` indexes the pools and the model
                for p in 0..n {
                    let pool = &b.pools[p];
                    prop_assert!(pool.used <= pool.total);
                    let held: u64 = live.iter().flat_map(Grant::units).filter(|(q, _, _)| *q == p).map(|(_, u, _)| u).sum();
                    prop_assert_eq!(pool.used, held);
                    prop_assert_eq!(pool.total - pool.used, free_units[p]);
                }
                // No device id is in two live grants.
                let mut seen = BTreeSet::new();
                for g in &live {
                    for (pool, _, positions) in g.units() {
                        for &pos in positions {
                            prop_assert!(seen.insert((pool, pos)), "id {} of pool {} held twice", pos, pool);
                        }
                    }
                }
            }
            for g in live.drain(..) {
                b.give_back(g);
            }
            for pool in &b.pools {
                prop_assert_eq!(pool.used, 0);
                prop_assert_eq!(pool.fresh, 0);
                prop_assert!(pool.returned.is_empty());
            }
            // Everything is free: a take of each pool's whole total gets all its ids in order.
            let whole = Requirement::new(b.pools.iter().map(|p| (p.name.clone(), p.total))).unwrap();
            let g = b.try_take(&whole).unwrap();
            for (pool, units, positions) in g.units() {
                if b.pools[pool].has_ids() {
                    prop_assert_eq!(positions.to_vec(), (0..units).collect::<Vec<_>>());
                }
            }
        }
    }
}
