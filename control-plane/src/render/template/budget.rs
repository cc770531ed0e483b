//! One render's budget: fuel, output bytes, objects and forEach iterations, shared by every
//! expression, resource entry and patch of the render (a component's type and all its
//! traits). A render that builds many pieces, each small, is bounded as a whole: the budget is
//! charged while the render builds, so it stops at the first piece past a limit instead of
//! building everything and measuring it after.
//!
//! A budget rides on the render's [`super::Context`]: every engine call made with that context
//! (or with one [`super::Context::with`] made from it) draws on it. Each call sizes its output
//! against what the render has left and books what it built when it ends; fuel goes through
//! the render's one meter; objects and iterations are counted as they start.

use std::sync::atomic::{AtomicUsize, Ordering};

use minijinja::value::Value;

use super::Limits;
use super::value::{Meter, Sizer};

/// What a render has used of its budget so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    /// minijinja fuel, over every expression of the render.
    pub fuel: u64,
    /// Approximate bytes of JSON the render built (objects, patch values, control fields).
    pub bytes: usize,
    /// Objects the resource entries produced.
    pub objects: usize,
    /// forEach items iterated, by resource entries and by patches.
    pub iterations: usize,
}

/// One render's allowance, charged as it goes. Shared by reference between the calls of one
/// render; atomics only so that a context stays `Send + Sync` (a render runs on one thread).
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    /// The render's [`Meter`], as the minijinja object the metered expressions look up.
    meter: Value,
    bytes: AtomicUsize,
    objects: AtomicUsize,
    iterations: AtomicUsize,
}

impl Budget {
    /// A fresh budget of `limits`.
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            meter: Value::from_object(Meter::new(limits.fuel)),
            bytes: AtomicUsize::new(0),
            objects: AtomicUsize::new(0),
            iterations: AtomicUsize::new(0),
        }
    }

    /// The limits this budget enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What the render has used so far.
    pub fn spent(&self) -> Spent {
        Spent {
            fuel: self.meter().spent(),
            bytes: self.bytes.load(Ordering::Relaxed),
            objects: self.objects.load(Ordering::Relaxed),
            iterations: self.iterations.load(Ordering::Relaxed),
        }
    }

    /// Counts one more rendered object; fails once the render has made more than
    /// `max_objects`.
    pub fn count_object(&self) -> Result<(), String> {
        let made = self.objects.fetch_add(1, Ordering::Relaxed) + 1;
        if made > self.limits.max_objects {
            return Err(format!(
                "the render makes more than {} objects (--render-max-objects)",
                self.limits.max_objects
            ));
        }
        Ok(())
    }

    /// Counts `items` forEach iterations before they run; fails when they would take the
    /// render past `max_iterations`.
    pub fn count_iterations(&self, items: usize) -> Result<(), String> {
        let done = self
            .iterations
            .fetch_add(items, Ordering::Relaxed)
            .saturating_add(items);
        if done > self.limits.max_iterations {
            return Err(format!(
                "the render's forEach loops run more than {} iterations in all \
                 (--render-max-iterations)",
                self.limits.max_iterations
            ));
        }
        Ok(())
    }

    /// Spends `fuel` on work done outside expressions (a patch visiting an object); fails
    /// once the render's fuel is gone.
    pub fn spend_fuel(&self, fuel: u64) -> Result<(), String> {
        let meter = self.meter();
        meter.book(fuel);
        if meter.spent() > self.limits.fuel {
            return Err(out_of_fuel(self.limits.fuel));
        }
        Ok(())
    }

    /// The meter metered expressions charge, as minijinja sees it.
    pub(super) fn meter_value(&self) -> Value {
        self.meter.clone()
    }

    /// A sizer for one call: bounded by what the render has left, booked back by
    /// [`Budget::book_bytes`] when the call ends.
    pub(super) fn sizer(&self) -> Sizer {
        let left = self
            .limits
            .max_output_bytes
            .saturating_sub(self.bytes.load(Ordering::Relaxed));
        Sizer::new(left, self.limits.max_output_bytes)
    }

    /// Books the bytes a call built.
    pub(super) fn book_bytes(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn meter(&self) -> &Meter {
        self.meter
            .downcast_object_ref::<Meter>()
            .expect("a budget's meter is a Meter")
    }
}

/// The message of a render that ran out of fuel.
pub(super) fn out_of_fuel(limit: u64) -> String {
    format!(
        "the render ran out of fuel (budget {limit}, --render-fuel): a loop or a value is too large"
    )
}

/// The message of a render whose output passed `limit` bytes.
pub(super) fn too_much_output(limit: usize) -> String {
    format!(
        "the render's output exceeds {} (--render-max-bytes)",
        byte_size(limit)
    )
}

/// `8 MiB`, `512 KiB` or `1000 bytes`: the exact figure in the largest unit that divides it.
fn byte_size(bytes: usize) -> String {
    match bytes {
        0 => "0 bytes".into(),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_budget() -> Budget {
        Budget::new(Limits {
            fuel: 10,
            max_objects: 2,
            max_iterations: 5,
            ..Limits::default()
        })
    }

    #[test]
    fn each_count_fails_past_its_limit_and_names_it() {
        let budget = mk_budget();
        budget.count_object().unwrap();
        budget.count_object().unwrap();
        let err = budget.count_object().unwrap_err();
        assert!(
            err.contains("more than 2 objects (--render-max-objects)"),
            "{err}"
        );

        budget.count_iterations(5).unwrap();
        let err = budget.count_iterations(1).unwrap_err();
        assert!(err.contains("more than 5 iterations"), "{err}");

        budget.spend_fuel(10).unwrap();
        let err = budget.spend_fuel(1).unwrap_err();
        assert!(err.contains("budget 10, --render-fuel"), "{err}");
        assert_eq!(budget.spent().fuel, 11);
    }

    #[test]
    fn sizes_are_spelled_in_the_largest_exact_unit() {
        assert_eq!(byte_size(8 << 20), "8 MiB");
        assert_eq!(byte_size(2048), "2 KiB");
        assert_eq!(byte_size(1000), "1000 bytes");
    }
}
