//! [`PriorityGate`]: MAX_PARALLEL_EXECUTIONS turns at once, and the turns
//! waiting for a place served by `processing_hints.priority`, highest
//! first, then in arrival order.

use std::collections::BinaryHeap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// A counting gate whose waiters are served by priority.
#[derive(Debug)]
pub struct PriorityGate {
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    arrivals: u64,
    waiting: BinaryHeap<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    priority: u8,
    arrival: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.arrival) == (other.priority, other.arrival)
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    /// Higher priority first; among equals the earlier arrival.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.arrival.cmp(&self.arrival))
    }
}

/// A place in the gate, given back when dropped.
#[derive(Debug)]
pub struct GatePermit<'a> {
    gate: &'a PriorityGate,
}

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A waiter's claim: if it is dropped (the turn gave up) after a place was
/// handed to it, the place goes on to the next.
struct Claim<'a> {
    gate: &'a PriorityGate,
    woken: oneshot::Receiver<()>,
    granted: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        self.woken.close();
        if self.woken.try_recv().is_ok() {
            self.gate.release();
        }
    }
}

impl PriorityGate {
    pub fn new(places: usize) -> PriorityGate {
        PriorityGate {
            state: Mutex::new(GateState {
                free: places,
                arrivals: 0,
                waiting: BinaryHeap::new(),
            }),
        }
    }

    /// A place, once every waiter of a higher priority (or of the same,
    /// arrived earlier) has had one. Cancel-safe: dropping the future gives
    /// up the claim, or the place if it was already handed over.
    pub async fn acquire(&self, priority: u8) -> GatePermit<'_> {
        let woken = {
            let mut state = self.state.lock().unwrap();
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                return GatePermit { gate: self };
            }
            let (wake, woken) = oneshot::channel();
            state.arrivals += 1;
            let arrival = state.arrivals;
            state.waiting.push(Waiter {
                priority,
                arrival,
                wake,
            });
            woken
        };
        let mut claim = Claim {
            gate: self,
            woken,
            granted: false,
        };
        // The sender lives in the queue until a place is handed over.
        let handed = (&mut claim.woken).await.is_ok();
        debug_assert!(handed, "a waiter leaves the queue only when woken");
        // The place is this permit's now; the claim must not give it back.
        claim.granted = true;
        GatePermit { gate: self }
    }

    /// Places free now.
    pub fn available(&self) -> usize {
        self.state.lock().unwrap().free
    }

    fn release(&self) {
        let mut state = self.state.lock().unwrap();
        while let Some(waiter) = state.waiting.pop() {
            if waiter.wake.send(()).is_ok() {
                return;
            }
            // That waiter gave up; the next one.
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_are_served_by_priority_then_arrival() {
        let gate = Arc::new(PriorityGate::new(1));
        let held = gate.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("low", 1), ("urgent-1", 4), ("normal", 2), ("urgent-2", 4)] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            // Arrive in the order written.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["urgent-1", "urgent-2", "normal", "low"]
        );
        assert_eq!(gate.available(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_no_place() {
        let gate = PriorityGate::new(1);
        let held = gate.acquire(2).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), gate.acquire(5)).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(gate.available(), 1, "the place came back");
        let _again = gate.acquire(2).await;
        assert_eq!(gate.available(), 0);
    }
}
