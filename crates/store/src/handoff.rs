//! Fresh deliveries handed from the transaction that queued them straight to this
//! process's delivery engine, leased in that same transaction.
//!
//! Before, every delivery waited for the engine's next claim: a write transaction of
//! its own, at most one every couple of milliseconds, then a read of its event. A
//! delivery at the head of its queue (nothing pending before it) is now leased as it is
//! inserted and handed over with its event once the commit is done, so its call starts
//! at once. The others wait for their turn and are claimed as before.
//!
//! Nothing is lost if the hand-over is not made: a transaction that rolls back takes its
//! leases with it; a process that dies with deliveries handed over leaves leases that
//! run out, after which any process claims them, as after any crash.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::deliveries::Claimed;
use crate::events::EventText;

/// Deliveries leased by one transaction, with their events.
#[derive(Debug, Default)]
pub struct Handoff {
    pub deliveries: Vec<Claimed>,
    pub events: Vec<Arc<EventText>>,
}

/// Where a process's transactions hand their fresh deliveries over: closed until its
/// engine opens it.
#[derive(Clone, Default)]
pub struct Handoffs(Arc<Mutex<Option<Route>>>);

struct Route {
    to: mpsc::Sender<Handoff>,
    margin: Duration,
}

impl Handoffs {
    /// Opens the hand-over: deliveries are leased for their handler's timeout plus
    /// `margin`, like a claim's. At most `capacity` transactions' deliveries wait to be
    /// taken; a transaction that finds no room leaves its deliveries to be claimed.
    pub fn open(&self, margin: Duration, capacity: usize) -> mpsc::Receiver<Handoff> {
        let (to, from) = mpsc::channel(capacity);
        *self.0.lock().expect("not poisoned") = Some(Route { to, margin });
        from
    }

    /// Closes it: transactions begun from now on lease nothing.
    pub fn close(&self) {
        *self.0.lock().expect("not poisoned") = None;
    }

    /// A place in the hand-over for one transaction, if it is open and has room.
    pub(crate) fn reserve(&self) -> Option<Reserved> {
        let route = self.0.lock().expect("not poisoned");
        let route = route.as_ref()?;
        let permit = route.to.clone().try_reserve_owned().ok()?;
        Some(Reserved {
            permit,
            margin: route.margin,
            handoff: Handoff::default(),
        })
    }
}

/// A transaction's place in the hand-over and what it leased so far.
pub(crate) struct Reserved {
    permit: mpsc::OwnedPermit<Handoff>,
    pub margin: Duration,
    pub handoff: Handoff,
}

impl Reserved {
    /// Whether it leased anything.
    pub(crate) fn holds_any(&self) -> bool {
        !self.handoff.deliveries.is_empty()
    }

    /// Hands the deliveries over; called once their transaction committed.
    pub(crate) fn send(self) {
        if self.holds_any() {
            self.permit.send(self.handoff);
        }
    }
}
