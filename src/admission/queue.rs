//! A FIFO of waiters that is fair between users: users take turns, so one user's hundred
//! queued acquisitions do not starve another user's one.

use crate::limit::UserKey;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use tokio::sync::oneshot;

/// What a waiter receives: a slot, or the reason it will not get one.
pub(crate) type Grant = Result<super::permit::SlotPermit, crate::rejection::RejectionKind>;

/// One queued acquisition.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) enqueued: Instant,
    pub(crate) tx: oneshot::Sender<Grant>,
}

/// Round-robin over users, FIFO within a user.
#[derive(Debug, Default)]
pub(crate) struct FairQueue {
    by_user: HashMap<Option<UserKey>, VecDeque<Waiter>>,
    rotation: VecDeque<Option<UserKey>>,
    len: usize,
}

impl FairQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, user: Option<UserKey>, waiter: Waiter) {
        let queue = self.by_user.entry(user.clone()).or_default();
        if queue.is_empty() {
            self.rotation.push_back(user);
        }
        queue.push_back(waiter);
        self.len += 1;
    }

    /// The next waiter: the head of the user whose turn it is.
    pub(crate) fn pop(&mut self) -> Option<Waiter> {
        let user = self.rotation.pop_front()?;
        let queue = self.by_user.get_mut(&user)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.by_user.remove(&user);
        } else {
            self.rotation.push_back(user);
        }
        if waiter.is_some() {
            self.len -= 1;
        }
        waiter
    }

    /// Removes the waiter `id` of `user` (its caller gave up); returns whether it was here.
    pub(crate) fn remove(&mut self, user: &Option<UserKey>, id: u64) -> bool {
        let Some(queue) = self.by_user.get_mut(user) else {
            return false;
        };
        let Some(pos) = queue.iter().position(|w| w.id == id) else {
            return false;
        };
        queue.remove(pos);
        self.len -= 1;
        if queue.is_empty() {
            self.by_user.remove(user);
            self.rotation.retain(|u| u != user);
        }
        true
    }

    /// Takes every waiter out, in turn order.
    pub(crate) fn drain(&mut self) -> Vec<Waiter> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(w) = self.pop() {
            all.push(w);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(id: u64) -> (Waiter, oneshot::Receiver<Grant>) {
        let (tx, rx) = oneshot::channel();
        (
            Waiter {
                id,
                enqueued: Instant::now(),
                tx,
            },
            rx,
        )
    }

    #[test]
    fn users_take_turns() {
        let mut q = FairQueue::default();
        let heavy = Some(UserKey::new("heavy"));
        let light = Some(UserKey::new("light"));
        let mut rxs = Vec::new();
        for id in 0..100 {
            let (w, rx) = waiter(id);
            rxs.push(rx);
            q.push(heavy.clone(), w);
        }
        let (w, _rx) = waiter(1000);
        q.push(light.clone(), w);
        let order: Vec<u64> = (0..3).map(|_| q.pop().unwrap().id).collect();
        assert_eq!(order, vec![0, 1000, 1]);
        assert_eq!(q.len(), 98);
    }

    #[test]
    fn removing_a_gone_waiter_keeps_counts_exact() {
        let mut q = FairQueue::default();
        let u = Some(UserKey::new("u"));
        let (a, _ra) = waiter(1);
        let (b, _rb) = waiter(2);
        q.push(u.clone(), a);
        q.push(u.clone(), b);
        assert!(q.remove(&u, 1));
        assert!(!q.remove(&u, 1));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().unwrap().id, 2);
        assert!(q.is_empty());
        assert!(q.pop().is_none());
    }
}
