//! A FIFO of waiters that is fair between users: users take turns, so one user's hundred
//! queued acquisitions do not starve another user's one.
//!
//! Every operation is O(log n) or amortised O(1), but for one: a waiter leaving (its caller
//! gave up, its deadline passed) is found by id with a binary search in its user's queue, and
//! the shorter side of that queue shifts over (a user's queue holds at most the configured
//! `user_queue_depth`; oldest-first departures shift nothing). A burst of many users timing
//! out together costs n log n, not n². The order of arrival across users is kept in
//! [`Arrivals`], appended to and trimmed from its ends. The deadline keeper's reads (the
//! earliest deadline, the waiters past theirs) walk every waiter, once per run of the keeper.
//!
//! A user's queue that empties is kept for the next user that arrives (up to [`SPARE`] of
//! them, each with room for at most [`SPARE_CAPACITY`] waiters), so at a steady state a
//! waiter allocates nothing here.

use super::arrivals::Arrivals;
use crate::criticality::Criticality;
use crate::limit::UserKey;
use crate::rejection::Refusal;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use tokio::sync::oneshot;

/// What a waiter receives: a slot, or the reason it will not get one.
pub(crate) type Grant = Result<super::permit::SlotPermit, Refusal>;

/// One queued acquisition.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// Unique and increasing: the order of arrival.
    pub(crate) id: u64,
    pub(crate) class: Criticality,
    pub(crate) enqueued: Instant,
    /// It must start by then, or not at all.
    pub(crate) deadline: Instant,
    pub(crate) tx: oneshot::Sender<Grant>,
}

/// Emptied user queues kept for reuse.
const SPARE: usize = 64;
/// The most waiters a kept queue has room for: a user that queued more gives its storage
/// back, so what is kept stays small whatever a burst once needed.
const SPARE_CAPACITY: usize = 8;

/// One user's waiters, oldest (lowest id) first, and the turn that is theirs in the rotation.
#[derive(Debug)]
struct UserQueue {
    waiters: VecDeque<Waiter>,
    turn: u64,
}

impl UserQueue {
    /// Where waiter `id` is in the queue (ids only grow, so the queue is sorted by them).
    fn position(&self, id: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&id, |w| w.id).ok()
    }
}

/// A waiter as the order of arrival keeps it: whose it is, and the two instants the admission
/// state reads of the oldest and the newest without looking up their user.
#[derive(Debug)]
struct Arrival {
    user: Option<UserKey>,
    enqueued: Instant,
    deadline: Instant,
}

/// Round-robin over users, FIFO within a user.
#[derive(Debug, Default)]
pub(crate) struct FairQueue {
    /// Keys are callers' own: the hasher is seeded per process.
    by_user: HashMap<Option<UserKey>, UserQueue, foldhash::fast::RandomState>,
    /// Users in turn order, each with the turn it was queued under; an entry whose user left
    /// (or came back under a new turn) is stale and skipped.
    rotation: VecDeque<(Option<UserKey>, u64)>,
    /// Every waiter by id: the newest is the tail.
    order: Arrivals<Arrival>,
    next_turn: u64,
    /// Emptied user queues, kept with their storage for the next user that arrives.
    spare: Vec<VecDeque<Waiter>>,
}

/// One user's place in a [`FairQueue`], found once: read its count, then add a waiter or
/// let it go.
pub(crate) struct Joining<'a> {
    entry: Entry<'a, Option<UserKey>, UserQueue>,
    rotation: &'a mut VecDeque<(Option<UserKey>, u64)>,
    order: &'a mut Arrivals<Arrival>,
    next_turn: &'a mut u64,
    spare: &'a mut Vec<VecDeque<Waiter>>,
}

impl Joining<'_> {
    /// How many waiters the user has in the queue.
    pub(crate) fn queued(&self) -> usize {
        match &self.entry {
            Entry::Occupied(e) => e.get().waiters.len(),
            Entry::Vacant(_) => 0,
        }
    }

    /// Adds `waiter` at the back of the user's queue (a new one takes the next turn, with
    /// kept storage when there is some).
    pub(crate) fn push(self, waiter: Waiter) {
        let user = self.entry.key().clone();
        self.order.push(
            waiter.id,
            Arrival {
                user: user.clone(),
                enqueued: waiter.enqueued,
                deadline: waiter.deadline,
            },
        );
        let (next_turn, spare) = (self.next_turn, self.spare);
        let queue = self.entry.or_insert_with(|| {
            *next_turn += 1;
            UserQueue {
                waiters: spare.pop().unwrap_or_default(),
                turn: *next_turn,
            }
        });
        if queue.waiters.is_empty() {
            self.rotation.push_back((user, queue.turn));
        }
        queue.waiters.push_back(waiter);
    }
}

impl FairQueue {
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Adds `waiter` at the back of `user`'s queue.
    #[cfg(test)]
    pub(crate) fn push(&mut self, user: Option<UserKey>, waiter: Waiter) {
        self.join(user).push(waiter);
    }

    /// `user`'s place in this queue: how many waiters it has here, and room to add one more,
    /// from one look-up of its queue.
    pub(crate) fn join(&mut self, user: Option<UserKey>) -> Joining<'_> {
        Joining {
            entry: self.by_user.entry(user),
            rotation: &mut self.rotation,
            order: &mut self.order,
            next_turn: &mut self.next_turn,
            spare: &mut self.spare,
        }
    }

    /// The next waiter: the head of the user whose turn it is. One look-up of the user's
    /// queue serves taking the waiter and, when it was the user's last, dropping the queue.
    pub(crate) fn pop(&mut self) -> Option<Waiter> {
        loop {
            let (user, turn) = self.rotation.pop_front()?;
            let Entry::Occupied(mut entry) = self.by_user.entry(user) else {
                continue;
            };
            let queue = entry.get_mut();
            if queue.turn != turn {
                continue;
            }
            let waiter = queue.waiters.pop_front();
            if queue.waiters.is_empty() {
                let queue = entry.remove();
                self.keep_spare(queue.waiters);
            } else {
                self.rotation.push_back((entry.key().clone(), turn));
            }
            let Some(waiter) = waiter else {
                continue;
            };
            self.order.remove(waiter.id);
            return Some(waiter);
        }
    }

    /// Drops `user`'s emptied queue, keeping its storage for a later user.
    fn forget(&mut self, user: &Option<UserKey>) {
        if let Some(queue) = self.by_user.remove(user) {
            self.keep_spare(queue.waiters);
        }
    }

    /// Keeps an emptied user queue's storage for a later user, if it is small and there is
    /// room.
    fn keep_spare(&mut self, waiters: VecDeque<Waiter>) {
        if self.spare.len() < SPARE && waiters.capacity() <= SPARE_CAPACITY {
            self.spare.push(waiters);
        }
    }

    /// How many waiters `user` has here.
    #[cfg(test)]
    pub(crate) fn len_of(&self, user: &Option<UserKey>) -> usize {
        self.by_user.get(user).map_or(0, |q| q.waiters.len())
    }

    /// When the oldest waiter here was queued.
    pub(crate) fn oldest_enqueued(&self) -> Option<Instant> {
        self.order.first().map(|a| a.enqueued)
    }

    /// Removes the waiter `id` of `user` (its caller gave up); returns it if it was here.
    pub(crate) fn remove(&mut self, user: &Option<UserKey>, id: u64) -> Option<Waiter> {
        let queue = self.by_user.get_mut(user)?;
        let waiter = queue.waiters.remove(queue.position(id)?)?;
        self.order.remove(id);
        if queue.waiters.is_empty() {
            // Its rotation entry goes stale and is skipped.
            self.forget(user);
            self.compact();
        }
        Some(waiter)
    }

    /// The deadline of the newest waiter.
    pub(crate) fn last_deadline(&self) -> Option<Instant> {
        self.order.last().map(|(_, a)| a.deadline)
    }

    /// Takes the newest waiter out.
    pub(crate) fn pop_last(&mut self) -> Option<Waiter> {
        let (id, user) = self.order.last().map(|(id, a)| (id, a.user.clone()))?;
        self.remove(&user, id)
    }

    /// The earliest deadline of the waiters here (deadlines need not follow the order of
    /// arrival: a request may bring a shorter one of its own). A walk over every waiter.
    pub(crate) fn earliest_deadline(&self) -> Option<Instant> {
        self.order.iter().map(|(_, a)| a.deadline).min()
    }

    /// Takes out every waiter whose deadline is at or before `cutoff`, oldest first.
    pub(crate) fn take_expired(&mut self, cutoff: Instant) -> Vec<Waiter> {
        let expired: Vec<(u64, Option<UserKey>)> = self
            .order
            .iter()
            .filter(|(_, a)| a.deadline <= cutoff)
            .map(|(id, a)| (id, a.user.clone()))
            .collect();
        expired
            .into_iter()
            .filter_map(|(id, user)| self.remove(&user, id))
            .collect()
    }

    /// Takes every waiter out, in turn order.
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<Waiter> {
        let mut all = Vec::with_capacity(self.len());
        while let Some(w) = self.pop() {
            all.push(w);
        }
        all
    }

    /// Drops stale rotation entries once they outnumber the live ones (amortised O(1)).
    fn compact(&mut self) {
        if self.rotation.len() > 2 * self.by_user.len() + 32 {
            let by_user = &self.by_user;
            self.rotation
                .retain(|(u, turn)| by_user.get(u).is_some_and(|q| q.turn == *turn));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(id: u64) -> (Waiter, oneshot::Receiver<Grant>) {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        (
            Waiter {
                id,
                class: Criticality::Standard,
                enqueued: now,
                deadline: now,
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
        assert!(q.remove(&u, 1).is_some());
        assert!(q.remove(&u, 1).is_none());
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().unwrap().id, 2);
        assert!(q.is_empty());
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_user_who_left_and_came_back_gets_one_turn_not_two() {
        let mut q = FairQueue::default();
        let (a, b) = (Some(UserKey::new("a")), Some(UserKey::new("b")));
        let mut rxs = Vec::new();
        let mut push = |q: &mut FairQueue, user: &Option<UserKey>, id| {
            let (w, rx) = waiter(id);
            rxs.push(rx);
            q.push(user.clone(), w);
        };
        push(&mut q, &a, 1);
        push(&mut q, &b, 2);
        // a leaves (a stale turn stays in the rotation) and comes back behind b.
        q.remove(&a, 1).unwrap();
        push(&mut q, &a, 3);
        push(&mut q, &a, 4);
        push(&mut q, &b, 5);
        let order: Vec<u64> = q.drain().iter().map(|w| w.id).collect();
        assert_eq!(order, vec![2, 3, 5, 4]);
    }

    #[test]
    fn the_tail_is_the_newest_waiter() {
        let mut q = FairQueue::default();
        let (a, b) = (Some(UserKey::new("a")), Some(UserKey::new("b")));
        let t0 = Instant::now();
        let mut rxs = Vec::new();
        for (id, user) in [(1, &a), (2, &b), (3, &a)] {
            let (mut w, rx) = waiter(id);
            w.deadline = t0 + std::time::Duration::from_millis(10 * id);
            rxs.push(rx);
            q.push(user.clone(), w);
        }
        let ms = |n| Some(t0 + std::time::Duration::from_millis(n));
        assert_eq!(q.last_deadline(), ms(30));
        assert_eq!(q.pop_last().unwrap().id, 3);
        assert_eq!(q.last_deadline(), ms(20));
        assert_eq!(q.pop_last().unwrap().id, 2);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().unwrap().id, 1);
    }

    #[test]
    fn the_oldest_waiter_is_known_across_users_and_departures() {
        let mut q = FairQueue::default();
        let (a, b) = (Some(UserKey::new("a")), Some(UserKey::new("b")));
        let t0 = Instant::now();
        let at = |id: u64, ms: u64| {
            let (mut w, rx) = waiter(id);
            w.enqueued = t0 + std::time::Duration::from_millis(ms);
            (w, rx)
        };
        assert_eq!(q.oldest_enqueued(), None);
        let (w1, _r1) = at(1, 10);
        let (w2, _r2) = at(2, 20);
        let (w3, _r3) = at(3, 30);
        q.push(b.clone(), w1);
        q.push(a.clone(), w2);
        q.push(b.clone(), w3);
        assert_eq!(
            q.oldest_enqueued(),
            Some(t0 + std::time::Duration::from_millis(10))
        );
        q.remove(&b, 1).unwrap();
        assert_eq!(
            q.oldest_enqueued(),
            Some(t0 + std::time::Duration::from_millis(20))
        );
        // b's turn comes first; a's waiter is then the oldest.
        assert_eq!(q.pop().unwrap().id, 3);
        assert_eq!(
            q.oldest_enqueued(),
            Some(t0 + std::time::Duration::from_millis(20))
        );
        assert_eq!(q.pop().unwrap().id, 2);
        assert_eq!(q.oldest_enqueued(), None);
        // A user that comes back after its queue emptied reuses a kept one.
        assert_eq!(q.spare.len(), 2);
        let (w4, _r4) = at(4, 40);
        q.push(a.clone(), w4);
        assert_eq!(q.spare.len(), 1);
        assert_eq!(q.len_of(&a), 1);
        assert_eq!(q.pop().unwrap().id, 4);
        // A queue that grew past the kept size gives its storage back.
        let mut rxs = Vec::new();
        for id in 10..30 {
            let (w, rx) = at(id, 50);
            rxs.push(rx);
            q.push(b.clone(), w);
        }
        let kept = q.spare.len();
        while q.pop().is_some() {}
        assert_eq!(q.spare.len(), kept);
    }

    #[test]
    fn expired_waiters_are_taken_out_whatever_their_place() {
        let mut q = FairQueue::default();
        let (a, b) = (Some(UserKey::new("a")), Some(UserKey::new("b")));
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut rxs = Vec::new();
        // Arrival order 1..=4; deadlines not in that order (4 brought a short one).
        for (id, user, deadline) in [(1, &a, 50), (2, &b, 300), (3, &a, 200), (4, &b, 40)] {
            let (mut w, rx) = waiter(id);
            w.deadline = t0 + ms(deadline);
            rxs.push(rx);
            q.push(user.clone(), w);
        }
        assert_eq!(q.earliest_deadline(), Some(t0 + ms(40)));
        assert!(q.take_expired(t0 + ms(39)).is_empty());
        let expired: Vec<u64> = q.take_expired(t0 + ms(50)).iter().map(|w| w.id).collect();
        assert_eq!(expired, vec![1, 4]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.earliest_deadline(), Some(t0 + ms(200)));
        // What is left keeps its users' turns: a's first, then b's.
        let order: Vec<u64> = q.drain().iter().map(|w| w.id).collect();
        assert_eq!(order, vec![3, 2]);
        assert_eq!(q.earliest_deadline(), None);
    }

    #[test]
    fn many_departures_stay_cheap() {
        // 50,000 waiters of 50,000 users all leave: quadratic removal would take minutes.
        let mut q = FairQueue::default();
        let users: Vec<Option<UserKey>> = (0..50_000)
            .map(|i| Some(UserKey::new(format!("u{i}"))))
            .collect();
        let mut rxs = Vec::with_capacity(users.len());
        for (i, u) in users.iter().enumerate() {
            let (w, rx) = waiter(i as u64);
            rxs.push(rx);
            q.push(u.clone(), w);
        }
        let started = std::time::Instant::now();
        for (i, u) in users.iter().enumerate() {
            assert!(q.remove(u, i as u64).is_some());
        }
        assert!(q.is_empty());
        assert!(q.pop().is_none());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
