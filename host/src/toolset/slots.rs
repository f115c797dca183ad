//! The running cap as a first-come, first-served queue of slots. A task
//! claims its place when `run` accepts it, so queued tasks start in the
//! order they were started, whatever order the runtime polls them in.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The slots of one host.
#[derive(Clone)]
pub(crate) struct Slots(Arc<Mutex<SlotQueue>>);

struct SlotQueue {
    free: usize,
    waiting: VecDeque<oneshot::Sender<Slot>>,
}

/// Permission for one task to execute; handed to the next in line on drop.
/// (`None` for a task that holds no slot ([`Claim::unmetered`]), and while
/// being disposed of without handing it on.)
pub(crate) struct Slot(Option<Arc<Mutex<SlotQueue>>>);

/// A claim on a slot: granted now, or a place in the queue.
pub(crate) enum Claim {
    Granted(Slot),
    Waiting(oneshot::Receiver<Slot>),
}

impl Slots {
    pub(crate) fn new(count: usize) -> Slots {
        Slots(Arc::new(Mutex::new(SlotQueue {
            free: count,
            waiting: VecDeque::new(),
        })))
    }

    /// A slot now if one is free, otherwise a place at the back of the queue.
    pub(crate) fn claim(&self) -> Claim {
        self.claim_at(false)
    }

    /// Like [`Slots::claim`] but ahead of everyone waiting: for a running
    /// task taking back the slot it lent out.
    pub(crate) fn claim_first(&self) -> Claim {
        self.claim_at(true)
    }

    fn claim_at(&self, front: bool) -> Claim {
        let mut queue = self.0.lock().unwrap();
        if queue.free > 0 && queue.waiting.is_empty() {
            queue.free -= 1;
            return Claim::Granted(Slot(Some(self.0.clone())));
        }
        let (sender, receiver) = oneshot::channel();
        if front {
            queue.waiting.push_front(sender);
        } else {
            queue.waiting.push_back(sender);
        }
        Claim::Waiting(receiver)
    }
}

impl Claim {
    /// A claim granted at once that holds no slot: for a task that runs
    /// elsewhere and is only followed here.
    pub(crate) fn unmetered() -> Claim {
        Claim::Granted(Slot(None))
    }

    /// Waits for the slot; `None` if the host went away first. Dropping
    /// this future gives the place up.
    pub(crate) async fn granted(self) -> Option<Slot> {
        match self {
            Claim::Granted(slot) => Some(slot),
            Claim::Waiting(receiver) => receiver.await.ok(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        let mut queue = shared.lock().unwrap();
        while let Some(next) = queue.waiting.pop_front() {
            match next.send(Slot(Some(shared.clone()))) {
                Ok(()) => return,
                // That claim was given up (its task was stopped while
                // queued): dispose of the slot without handing it on again.
                Err(mut unclaimed) => drop(unclaimed.0.take()),
            }
        }
        queue.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_handed_out_first_come_first_served() {
        let slots = Slots::new(1);
        let first = slots.claim().granted().await.unwrap();
        let second = slots.claim();
        let third = slots.claim();
        let abandoned = slots.claim();
        drop(abandoned);
        drop(first);
        let second = second.granted().await.unwrap();
        let jumper = slots.claim_first();
        drop(second);
        let jumper = jumper.granted().await.unwrap();
        drop(jumper);
        let third = third.granted().await.unwrap();
        drop(third);
        // All released: the slot is free again.
        assert!(matches!(slots.claim(), Claim::Granted(_)));
    }
}
