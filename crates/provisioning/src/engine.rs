//! The delivery engine: leases due deliveries from the outbox, calls their handlers,
//! writes each attempt's outcome and log row, and schedules retries.
//!
//! No transaction or row lock is held across a call: a delivery is leased by a short
//! UPDATE, called, then finished by another short transaction. A process that dies
//! mid-call leaves only an expiring lease, after which any process takes the delivery
//! again (at-least-once). Order per (handler, client) comes from the claim query: a
//! delivery is claimable only when no earlier one of its handler and key is unfinished.
//! A delivery queued with nothing unfinished before it is leased by the
//! transaction that queues it and handed over at its commit, without a claim (see
//! `billhook_store::handoff`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billhook_domain::catalogue::Stage;
use billhook_domain::entities::Handler;
use billhook_domain::payload::{payload_text, EventHeader};
use billhook_domain::Timestamp;
use billhook_store::deliveries::{self, Claimed, Lease, Outcome};
use billhook_store::executions::Execution;
use billhook_store::handlers::Secrets;
use billhook_store::handoff::Handoff;
use billhook_store::{events, Db, StoreError};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::caller::{CallMeta, CallOutcome, Caller};
use crate::handler_cache::HandlerCache;
pub use crate::metrics::{Histogram, Metrics};
use crate::outcomes::{write_results, Finished, Written};
use crate::retry::next_delay;

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Calls in flight at most, over all handlers (one per queue being called); never
    /// fewer than twice `per_handler` (see [`engine_slots`]).
    pub max_in_flight: usize,
    /// Deliveries of one (handler, client) queue taken in one claim and made one after
    /// the other without going back to the database in between.
    pub per_queue: usize,
    /// Calls in flight at most per handler (different clients in parallel): what one
    /// endpoint is asked to take at once.
    pub per_handler: usize,
    /// How long a lease lasts beyond the handler's own timeout: the margin for
    /// waiting for a slot and writing the result.
    pub lease_margin: Duration,
    /// The slow fallback poll, for work woken by nothing (another process's commits
    /// on SQLite, retries coming due).
    pub poll: Duration,
    /// The least time between two claims. Every commit wakes the engine; claiming at
    /// each wake-up made one write transaction per event under load, where waiting this
    /// long gathers the events of many commits into one claim.
    pub claim_gap: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_in_flight: 320,
            per_queue: 16,
            // 32 held deliveries back under load: with a few milliseconds per call, one
            // handler's calls could not keep up with what the API acknowledged, and the
            // events waited in line (bench, 128 API clients: p99 100-150 ms; 15-40 ms
            // with 64). More calls at once take CPU from the API's writers, which then
            // shared fewer commits, until the group commit let the scheduler run once
            // before committing (see billhook_store::group_commit).
            per_handler: 64,
            lease_margin: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            claim_gap: Duration::from_millis(2),
        }
    }
}

/// The engine of one process. Several processes may run on one database.
#[derive(Clone)]
pub struct DeliveryEngine {
    db: Db,
    caller: Caller,
    wake: Arc<Notify>,
    config: EngineConfig,
    per_handler: Arc<Mutex<HashMap<i64, Arc<Turns>>>>,
    handlers: HandlerCache,
    pub metrics: Arc<Metrics>,
}

impl DeliveryEngine {
    /// An engine woken through `wake` (the pipeline notifies it after each commit).
    pub fn new(
        db: Db,
        caller: Caller,
        wake: Arc<Notify>,
        config: EngineConfig,
        handlers: HandlerCache,
    ) -> Self {
        DeliveryEngine {
            db,
            caller,
            wake,
            config,
            per_handler: Arc::default(),
            handlers,
            metrics: Arc::default(),
        }
    }

    /// The same engine counting into `metrics` (shared with the before chain).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same engine with another fallback poll: how long it sleeps when nothing woke
    /// it and no retry is due sooner.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.config.poll = poll;
        self
    }

    /// The same engine with another limit of calls in flight per handler (at least one).
    pub fn with_per_handler(mut self, calls: usize) -> Self {
        self.config.per_handler = calls.max(1);
        self
    }

    /// The same engine with another limit of calls in flight over all handlers (see
    /// [`engine_slots`] for the least it takes).
    pub fn with_max_calls(mut self, calls: usize) -> Self {
        self.config.max_in_flight = calls;
        self
    }

    /// Runs until `stop`; then lets calls in flight finish (they are bounded by their
    /// timeouts) and gives back the leases of any that do not finish in time.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if engine_slots(&self.config) > self.config.max_in_flight {
            tracing::warn!(
                delivery_max_calls = self.config.max_in_flight,
                handler_concurrency = self.config.per_handler,
                "delivery_max_calls is raised to {}, twice handler_concurrency",
                engine_slots(&self.config)
            );
        }
        let listener = tokio::spawn({
            let (db, wake) = (self.db.clone(), self.wake.clone());
            async move { db.listen_deliveries(wake).await }
        });
        let statistics = tokio::spawn(keep_statistics(self.db.clone()));
        let heads = tokio::spawn(keep_queues_sound(self.db.clone(), self.wake.clone()));
        // Deliveries this process's transactions leased for us.
        let mut handed = self
            .db
            .handoffs()
            .open(self.config.lease_margin, HANDOFF_ROOM);
        // Outcomes are written in batches by one task: one transaction for many
        // deliveries instead of one each. On SQLite it runs on the writer thread.
        let (results, results_rx) = mpsc::channel::<Written>(4096);
        let writer = self.db.spawn_writer(write_results(
            self.db.clone(),
            results_rx,
            self.wake.clone(),
        ));
        let mut workers = Workers {
            slots: Arc::new(Semaphore::new(engine_slots(&self.config))),
            tasks: JoinSet::new(),
            in_flight: Arc::default(),
            results,
            stop: stop.clone(),
        };
        let mut last_claim: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            while let Ok(handoff) = handed.try_recv() {
                workers.start_handed(&self, handoff).await;
            }
            if let Some(at) = last_claim {
                let gap = tokio::time::sleep_until(at + self.config.claim_gap);
                self.serving_handoffs(&mut workers, &mut handed, gap).await;
            }
            while workers.tasks.try_join_next().is_some() {}
            let free = workers.slots.available_permits();
            let claimed_at = Timestamp::now();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                last_claim = Some(tokio::time::Instant::now());
                let claim = self.claim(free);
                match self
                    .serving_handoffs(&mut workers, &mut handed, claim)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming deliveries failed");
                        Vec::new()
                    }
                }
            };
            if claimed.is_empty() {
                let saturated = free == 0;
                let wait = self.idle_wait(saturated, claimed_at).await;
                let until = tokio::time::Instant::now() + wait;
                // Deliveries handed over meanwhile are started without claiming again.
                loop {
                    tokio::select! {
                        _ = self.wake.notified() => break,
                        _ = tokio::time::sleep_until(until) => break,
                        _ = stop.changed() => break,
                        // A finished queue frees a slot to claim with.
                        Some(_) = workers.tasks.join_next(), if saturated => break,
                        Some(handoff) = handed.recv() => workers.start_handed(&self, handoff).await,
                    }
                }
                continue;
            }
            let events_of = self.events_of(&claimed);
            let events = match self
                .serving_handoffs(&mut workers, &mut handed, events_of)
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    // Their leases expire and they are claimed again.
                    tracing::warn!(error = %e, "loading the events of claimed deliveries failed");
                    continue;
                }
            };
            workers.start(&self, queues_of(claimed, &events)).await;
        }
        listener.abort();
        statistics.abort();
        heads.abort();
        // Nothing more is handed over; what was, and not started, is given back (a
        // transaction still holding a place hands its deliveries over at its commit).
        self.db.handoffs().close();
        handed.close();
        let rest = async {
            while let Some(handoff) = handed.recv().await {
                let leases = handoff.deliveries.iter().map(Claimed::lease);
                give_back(leases, &workers.results, &workers.in_flight).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), rest).await;
        let Workers {
            mut tasks,
            in_flight,
            results,
            ..
        } = workers;
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(35), &mut Box::pin(drain))
            .await
            .is_err()
        {
            // Stop the calls still running before their leases are given back, so that
            // no delivery is both called here and free to be taken elsewhere.
            tasks.shutdown().await;
            let leases: Vec<Lease> = in_flight
                .lock()
                .expect("not poisoned")
                .iter()
                .copied()
                .collect();
            if let Ok(mut conn) = self.db.write.acquire().await {
                let _ = deliveries::release(&mut conn, &leases).await;
            }
        }
        // Every finished call's outcome is written before the engine stops.
        drop(results);
        let _ = writer.await;
    }

    async fn claim(&self, queues: usize) -> Result<Vec<Claimed>, StoreError> {
        let now = Timestamp::now();
        let until = now.add_duration(self.config.lease_margin);
        let mut tx = self.db.begin().await?;
        let claimed = deliveries::claim(
            &mut tx,
            self.db.dialect,
            now,
            until,
            queues.min(256) as i64,
            self.config.per_queue as i64,
        )
        .await?;
        tx.commit().await?;
        // After the claim, so as not to hold it up: what this flags is claimed next.
        if self.look_behind().await {
            self.wake.notify_one();
        }
        Ok(claimed)
    }

    /// Runs `work` (the gap between claims, a claim, a read of events) while starting
    /// what is handed over meanwhile, which would otherwise wait for it.
    async fn serving_handoffs<T>(
        &self,
        workers: &mut Workers,
        handed: &mut mpsc::Receiver<Handoff>,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                Some(handoff) = handed.recv() => workers.start_handed(self, handoff).await,
            }
        }
    }

    /// PostgreSQL: flags the heads of the queues this process's transactions queued
    /// deliveries behind others in, now that they have committed (see
    /// `billhook_store::head_checks`); whether it flagged one. What fails is left to
    /// [`keep_queues_sound`].
    async fn look_behind(&self) -> bool {
        let flagged = deliveries::look_at_queued_behind(&self.db).await;
        flagged.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "flagging the heads of queued deliveries failed");
            false
        })
    }

    /// How long to sleep when the claim that looked at `claimed_at` found nothing: until
    /// the next head falls due (a retry, the end of a lease), but never longer than the
    /// fallback poll. A head due by `claimed_at` and not claimed is blocked behind an
    /// earlier delivery in flight, whose completion wakes us; one that fell due since is
    /// claimed at once (the claims' gap still applies).
    async fn idle_wait(&self, saturated: bool, claimed_at: Timestamp) -> Duration {
        if saturated {
            return self.config.poll;
        }
        let next = match self.db.read.acquire().await {
            Ok(mut conn) => deliveries::next_due(&mut conn, claimed_at)
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        let now = Timestamp::now();
        match next {
            Some(at) => {
                let micros = u64::try_from(at.micros() - now.micros()).unwrap_or(0);
                Duration::from_micros(micros).min(self.config.poll)
            }
            None => self.config.poll,
        }
    }

    fn turns(&self, handlers_id: i64) -> Arc<Turns> {
        self.per_handler
            .lock()
            .expect("not poisoned")
            .entry(handlers_id)
            .or_insert_with(|| {
                Arc::new(Turns::new(
                    self.config.per_handler,
                    queues_per_handler(&self.config),
                ))
            })
            .clone()
    }

    async fn events_of(
        &self,
        claimed: &[Claimed],
    ) -> Result<HashMap<i64, Arc<events::EventText>>, StoreError> {
        let seqs: Vec<i64> = claimed.iter().map(|c| c.event_seq).collect();
        let mut conn = self.db.read.acquire().await?;
        Ok(events::get_many(&mut conn, &seqs)
            .await?
            .into_iter()
            .map(|e| (e.seq, Arc::new(e)))
            .collect())
    }

    /// Makes the deliveries of one queue in order. It stops at the first that must be
    /// tried again later (the rest wait behind it) and gives the rest back; so it does
    /// with a delivery whose lease would end before its call could, and on shutdown.
    async fn deliver_queue(
        &self,
        queue: Queue,
        slots: &Semaphore,
        results: &mpsc::Sender<Written>,
        in_flight: &Mutex<HashSet<Lease>>,
        stop: &watch::Receiver<bool>,
    ) {
        let Some((first, _)) = queue.first() else {
            return;
        };
        let turns = self.turns(first.handlers_id);
        let _turn = turns.calls.acquire().await.expect("never closed");
        let _slot = slots.acquire().await.expect("never closed");
        let mut queue = queue.into_iter().map(|(c, event)| (c.lease(), c, event));
        while let Some((lease, c, event)) = queue.next() {
            // Checked for the first too: it may have waited for the handler's permit
            // while other queues of the handler were worked on.
            let stopped = *stop.borrow();
            let handler = if stopped {
                None
            } else {
                self.handler_if_lease_covers_call(&c).await
            };
            let Some(handler) = handler else {
                let untried = std::iter::once(lease).chain(queue.map(|(lease, ..)| lease));
                return give_back(untried, results, in_flight).await;
            };
            let carry_on = match self.attempt(&c, &event, &handler).await {
                Ok(finished) => {
                    let carry_on = !matches!(finished.outcome, Outcome::Retry { .. });
                    let _ = results.send(Written::Attempt(Box::new(finished))).await;
                    carry_on
                }
                // The lease expires and the delivery is taken again: nothing is lost.
                Err(e) => {
                    tracing::warn!(error = %e, delivery = c.id, "delivery attempt failed");
                    false
                }
            };
            in_flight.lock().expect("not poisoned").remove(&lease);
            turns.attempts.fetch_add(1, Ordering::Relaxed);
            if !carry_on {
                return give_back(queue.map(|(lease, ..)| lease), results, in_flight).await;
            }
        }
    }

    /// The delivery's handler, if the delivery's lease lasts until its call must have
    /// ended and its outcome been written (half the lease margin is kept for that): a
    /// delivery that waited behind others may have used up its lease, and once the lease
    /// ends another process, or this one, may take it again. The call is made with this
    /// same copy of the handler: with a copy read again, renewed meanwhile with a longer
    /// timeout, the call could outlive the lease.
    async fn handler_if_lease_covers_call(&self, c: &Claimed) -> Option<HandlerEntry> {
        let entry = match self.handlers.get(&self.db, c.handlers_id).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, delivery = c.id, "reading the delivery's handler failed");
                return None;
            }
        };
        let margin = self.config.lease_margin.as_micros() / 2;
        let needed =
            i64::from(entry.0.timeout_ms) * 1000 + i64::try_from(margin).unwrap_or(i64::MAX / 2);
        (Timestamp::now().add_micros(needed) < c.lease_until).then_some(entry)
    }

    async fn attempt(
        &self,
        c: &Claimed,
        event: &events::EventText,
        entry: &HandlerEntry,
    ) -> Result<Finished, StoreError> {
        let (handler, secrets) = &**entry;
        let now = Timestamp::now();
        if !handler.takes_after_deliveries() {
            // Claimed just before its handler was disabled. The claim skips handlers
            // that are not enabled, so it waits untouched from now on and goes once the
            // handler is enabled again, but not before our cached copy of it is
            // renewed: a stale copy of a handler that another process enabled again
            // must not make us claim it in a loop. One archived or made a before
            // handler is failed by the outcome writer, as the change failed the rest
            // (see `deliveries::fail_uncalled`), if the database says so: this copy
            // may be stale.
            let later = Outcome::Retry {
                next_at: now.add_duration(crate::handler_cache::FRESH_FOR),
                error: match handler.stage {
                    Stage::After => format!(
                        "handler is {}; waiting until it is enabled",
                        handler.status.as_str()
                    ),
                    Stage::Before => deliveries::MADE_BEFORE.into(),
                },
            };
            return Ok(Finished {
                lease: c.lease(),
                attempts: c.attempts,
                outcome: later,
                execution: None,
            });
        }
        let header = EventHeader {
            dt: event.dt,
            events_id: &event.events_id,
            object_id: event.object_id,
            uid: &event.uid,
            stage: Stage::After,
        };
        let request = payload_text(&header, &event.data, &event.previous);
        let meta = CallMeta {
            events_id: &event.events_id,
            uid: &event.uid,
            object_id: event.object_id,
            stage: Stage::After,
        };
        let signing = secrets.signing(now);
        let outcome = self
            .caller
            .call(handler, &signing, &meta, request.get().as_bytes())
            .await;
        let attempts = c.attempts + 1;
        let result = decide(handler, attempts, &outcome);
        self.record_metrics(handler, &result, &outcome);

        let execution = execution_row(handler, event, c, attempts, &outcome, request);
        Ok(Finished {
            lease: c.lease(),
            attempts,
            outcome: result,
            execution: Some(execution),
        })
    }

    fn record_metrics(&self, handler: &Handler, result: &Outcome, outcome: &CallOutcome) {
        let label = match result {
            Outcome::Succeeded => "success",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        };
        let m = &self.metrics;
        m.record(&m.deliveries, handler.id, label, outcome.duration);
    }
}

/// How often the queues are walked (see [`keep_queues_sound`]).
const FLAG_EVERY_HEAD: Duration = Duration::from_secs(10);

/// At the start and every [`FLAG_EVERY_HEAD`]: fails the deliveries left pending for an
/// archived handler, or for one made a before handler, that nothing else fails (see
/// `deliveries::fail_uncalled`: one put aside for a moment at the change, or in flight
/// then in a process that died; on PostgreSQL also one that a transaction begun before
/// the change queued).
/// On PostgreSQL, also flags the head of every queue that has none flagged: what a
/// process that died between a commit and its look at the queues it touched left (see
/// `deliveries::claim`), and wakes the claim when it flagged something.
async fn keep_queues_sound(db: Db, wake: Arc<Notify>) {
    loop {
        if db.dialect == billhook_store::Dialect::Postgres {
            match deliveries::flag_every_head(&db).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(flagged = n, "flagged queue heads that were not");
                    wake.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "walking the queues for their heads failed"),
            }
        }
        if let Err(e) = fail_uncalled(&db).await {
            tracing::warn!(error = %e, "failing the deliveries of archived handlers failed");
        }
        tokio::time::sleep(FLAG_EVERY_HEAD).await;
    }
}

/// [`deliveries::fail_uncalled`] over every handler.
async fn fail_uncalled(db: &Db) -> Result<(), StoreError> {
    // In a transaction: on SQLite a member of a group commit, not a group of its own.
    let mut tx = db.begin().await?;
    deliveries::fail_uncalled(&mut tx, None, Timestamp::now()).await?;
    tx.commit().await
}

/// On PostgreSQL, keeps the planner's statistics of the deliveries up to date (see
/// [`deliveries::analyze_if_stale`]); ends at once on SQLite, or when PostgreSQL does
/// not let the database user take them.
async fn keep_statistics(db: Db) {
    if db.dialect != billhook_store::Dialect::Postgres {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match deliveries::analyze_if_stale(&db).await {
            Ok(deliveries::Analyzed::NotAllowed) => {
                tracing::warn!(
                    "the database user may not ANALYZE the deliveries table (only its owner \
                     may): claims rely on autovacuum's statistics, which lag on a table \
                     filling up fast"
                );
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "refreshing the statistics of deliveries failed"),
        }
    }
}

/// Transactions whose deliveries may wait in the hand-over at once; beyond that,
/// deliveries are left to be claimed.
const HANDOFF_ROOM: usize = 1024;

/// How long the queues of a handler that has taken on all it may are put aside (see
/// [`queues_per_handler`]) before a claim may take them again: a moment at first (a
/// burst the handler is about to work through), then twice as long each time a whole
/// span goes by with the handler still full (a backlog, or an endpoint that hangs), up
/// to the most, but never longer than half the time the handler's last span says it
/// needs for the queues it has taken on, so that they are back before it runs out; a
/// handler that had room again for two spans starts over.
///
/// Measured: put aside for a second at once, the deliveries a busy handler had no room
/// for in a burst lost that second (`bench`: half the deliveries per second). Put aside
/// for a moment each time, those of a backlog came back to be claimed and put aside
/// again every few milliseconds: with 3,000 clients due to a handler taking 200 ms a
/// call (320 a second), the server spent twice the CPU it needed; doubled up to 5 s
/// without the bound, that handler ran out of work and made half its calls.
const PUT_ASIDE_AT_LEAST: Duration = Duration::from_millis(5);
const PUT_ASIDE_AT_MOST: Duration = Duration::from_secs(5);

/// One handler's share of the engine.
struct Turns {
    /// Its calls at once (`per_handler`).
    calls: Semaphore,
    /// Its queues taken on at once, calling or waiting for a call's turn (see
    /// [`queues_per_handler`]).
    taken: Arc<Semaphore>,
    /// Its queues taken on at most (the permits of `taken`).
    share: usize,
    /// Its attempts ended so far.
    attempts: AtomicU64,
    aside: Mutex<Aside>,
}

/// How long a handler's queues are put aside now (see [`PUT_ASIDE_AT_LEAST`]).
struct Aside {
    period: Duration,
    /// When `period` was set, and the handler's attempts ended by then.
    since: Instant,
    attempts_then: u64,
    /// When a queue was last put aside.
    last: Instant,
}

impl Aside {
    fn new() -> Aside {
        let long_ago = Instant::now() - PUT_ASIDE_AT_MOST * 2;
        Aside {
            period: PUT_ASIDE_AT_LEAST,
            since: long_ago,
            attempts_then: 0,
            last: long_ago,
        }
    }
}

impl Turns {
    fn new(calls: usize, share: usize) -> Turns {
        Turns {
            calls: Semaphore::new(calls),
            taken: Arc::new(Semaphore::new(share)),
            share,
            attempts: AtomicU64::new(0),
            aside: Mutex::new(Aside::new()),
        }
    }

    /// How long to put a queue of this handler aside now.
    fn put_aside_for(&self) -> Duration {
        let now = Instant::now();
        let ended = self.attempts.load(Ordering::Relaxed);
        let mut aside = self.aside.lock().expect("not poisoned");
        if now - aside.last > aside.period * 2 {
            aside.period = PUT_ASIDE_AT_LEAST;
        } else if now - aside.since >= aside.period {
            let rate = (ended - aside.attempts_then) as f64 / (now - aside.since).as_secs_f64();
            let half_its_work = if rate > 0.0 {
                Duration::from_secs_f64(self.share as f64 / rate / 2.0)
            } else {
                PUT_ASIDE_AT_MOST
            };
            aside.period = (aside.period * 2)
                .min(half_its_work)
                .clamp(PUT_ASIDE_AT_LEAST, PUT_ASIDE_AT_MOST);
        } else {
            aside.last = now;
            return aside.period;
        }
        aside.since = now;
        aside.attempts_then = ended;
        aside.last = now;
        aside.period
    }
}

/// The calls in flight at most over all handlers: `max_in_flight`, but at least twice
/// one handler's. One handler hanging until its timeouts holds its own calls; with the
/// limit at one handler's, that would be all of them.
fn engine_slots(config: &EngineConfig) -> usize {
    config.max_in_flight.max(2 * config.per_handler)
}

/// The queues one handler may have taken on at once, calling or waiting for its turn:
/// four for each of its calls at once (256 by default, what one busy handler had
/// before), so that queues are ready as calls end while claims catch up. A queue takes
/// an engine slot only once it has its handler's turn, to call: a queue waiting for its
/// turn holding one, and claims sized to the free slots, let a handler that hangs until
/// its timeout, with more clients due than slots, take every slot (two such handlers
/// did, once one handler was held to a share of the slots), and every other handler's
/// deliveries waited for its calls to time out. Now what a handler holds of the engine
/// is its calls at once; the queues it has no room for are put aside for a moment
/// ([`PUT_ASIDE_AT_LEAST`]), out of the claims' way.
fn queues_per_handler(config: &EngineConfig) -> usize {
    config.per_handler.saturating_mul(4)
}

/// The calls under way and what they need.
struct Workers {
    /// One per queue being called ([`engine_slots`]).
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    /// The leases of the deliveries taken and not yet finished.
    in_flight: Arc<Mutex<HashSet<Lease>>>,
    results: mpsc::Sender<Written>,
    stop: watch::Receiver<bool>,
}

impl Workers {
    /// Starts working on each queue, in its own task, which waits for its handler's
    /// turn and then for an engine slot. A queue whose handler has taken on all it may
    /// is put aside (see [`queues_per_handler`]).
    async fn start(&mut self, engine: &DeliveryEngine, queues: Vec<Queue>) {
        for queue in queues {
            let Some((first, _)) = queue.first() else {
                continue;
            };
            let turns = engine.turns(first.handlers_id);
            match turns.taken.clone().try_acquire_owned() {
                Ok(taken) => self.spawn(engine, queue, taken),
                Err(_) => {
                    let leases = queue.iter().map(|(c, _)| c.lease());
                    put_aside(leases, turns.put_aside_for(), &self.results).await;
                }
            }
        }
    }

    /// Starts the deliveries a transaction handed over, as [`Workers::start`] does.
    async fn start_handed(&mut self, engine: &DeliveryEngine, handoff: Handoff) {
        let events = handoff.events.into_iter().map(|e| (e.seq, e)).collect();
        self.start(engine, queues_of(handoff.deliveries, &events))
            .await;
    }

    /// Works on `queue` in a task holding `taken` (its handler's place) until it is done.
    fn spawn(&mut self, engine: &DeliveryEngine, queue: Queue, taken: OwnedSemaphorePermit) {
        let (engine, slots, in_flight, results, stop) = (
            engine.clone(),
            self.slots.clone(),
            self.in_flight.clone(),
            self.results.clone(),
            self.stop.clone(),
        );
        in_flight
            .lock()
            .expect("not poisoned")
            .extend(queue.iter().map(|(c, _)| c.lease()));
        self.tasks.spawn(async move {
            // Boxed: a call's future is large, and the task's own future is moved a few
            // times on its way into the runtime; its copies were 1 % of the server.
            Box::pin(engine.deliver_queue(queue, &slots, &results, &in_flight, &stop)).await;
            drop(taken);
        });
    }
}

/// Gives untried deliveries back: their leases end, so they can be claimed again once
/// the one they wait for is done.
async fn give_back(
    leases: impl Iterator<Item = Lease>,
    results: &mpsc::Sender<Written>,
    in_flight: &Mutex<HashSet<Lease>>,
) {
    for lease in leases {
        in_flight.lock().expect("not poisoned").remove(&lease);
        let _ = results.send(Written::Release(lease)).await;
    }
}

/// Puts untried deliveries aside: their leases are moved to `period` from now, so that
/// no claim takes them before.
async fn put_aside(
    leases: impl Iterator<Item = Lease>,
    period: Duration,
    results: &mpsc::Sender<Written>,
) {
    for lease in leases {
        let _ = results.send(Written::PutAside(lease, period)).await;
    }
}

/// A handler and its secrets, as the engine's cache holds them.
type HandlerEntry = Arc<(Handler, Secrets)>;

/// The deliveries of one (handler, ordering key) queue taken by one claim, in order,
/// with their events.
type Queue = Vec<(Claimed, Arc<events::EventText>)>;

/// The claimed deliveries grouped by queue, each queue in order, with their events. A
/// queue ends before a delivery whose event is missing (its lease runs out and it is
/// claimed again; the ones behind it wait for it).
fn queues_of(claimed: Vec<Claimed>, events: &HashMap<i64, Arc<events::EventText>>) -> Vec<Queue> {
    let mut queues: HashMap<(i64, String), Queue> = HashMap::new();
    let mut broken: HashSet<(i64, String)> = HashSet::new();
    let mut order = Vec::new();
    // `claimed` is in id order, so each queue's deliveries stay in theirs.
    for c in claimed {
        let key = (c.handlers_id, c.ordering_key.clone());
        if broken.contains(&key) {
            continue;
        }
        let Some(event) = events.get(&c.event_seq).cloned() else {
            tracing::warn!(delivery = c.id, "delivery lost its event");
            broken.insert(key);
            continue;
        };
        queues
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push((c, event));
    }
    order
        .into_iter()
        .filter_map(|k| queues.remove(&k))
        .collect()
}

/// Success, another try later, or the end of the schedule.
fn decide(handler: &Handler, attempts: i64, outcome: &CallOutcome) -> Outcome {
    if outcome.success {
        return Outcome::Succeeded;
    }
    let error = outcome.error.clone().unwrap_or_else(|| "failed".into());
    let done = usize::try_from(attempts).unwrap_or(usize::MAX);
    match next_delay(&handler.retry_schedule, done, outcome.retry_after) {
        Some(delay) => Outcome::Retry {
            next_at: Timestamp::now().add_duration(delay),
            error,
        },
        None => Outcome::Failed { error },
    }
}

fn execution_row(
    handler: &Handler,
    event: &events::EventText,
    c: &Claimed,
    attempt: i64,
    outcome: &CallOutcome,
    request: Box<serde_json::value::RawValue>,
) -> Execution {
    Execution {
        id: 0,
        dt: Timestamp::now(),
        handlers_id: handler.id,
        handler: handler.name.clone(),
        events_id: event.events_id.clone(),
        event_uid: event.uid.clone(),
        object_id: event.object_id,
        stage: Stage::After.as_str().into(),
        attempt,
        status: if outcome.success { "success" } else { "fail" }.into(),
        duration_ms: outcome.duration_ms(),
        request,
        response_status: outcome.response_status,
        response_body: outcome.response_body.clone(),
        error: outcome.error.clone(),
        modified: None,
        deliveries_id: Some(c.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole period since it was set, and the last put-aside one period ago; `ended`
    /// attempts meanwhile.
    fn a_period_passes(t: &Turns, ended: u64) {
        let mut aside = t.aside.lock().unwrap();
        let period = aside.period;
        aside.since -= period;
        aside.last -= period;
        t.attempts.fetch_add(ended, Ordering::Relaxed);
    }

    /// A handler that stays full is put aside twice as long each time a whole period
    /// passes, up to the most, and no longer than half the time its calls take to work
    /// through its share; one that had room again for two periods starts over.
    #[test]
    fn a_handler_that_stays_full_is_put_aside_longer_and_longer() {
        let t = Turns::new(64, 256);
        assert_eq!(t.put_aside_for(), PUT_ASIDE_AT_LEAST);
        // Within the period: the same period, however often asked.
        assert_eq!(t.put_aside_for(), PUT_ASIDE_AT_LEAST);
        for expected in [2, 4, 8] {
            a_period_passes(&t, 0);
            assert_eq!(t.put_aside_for(), PUT_ASIDE_AT_LEAST * expected);
        }
        // Its calls ending 320 a second: its 256 queues last 0.8 s, so at most 0.4 s.
        t.aside.lock().unwrap().period = Duration::from_millis(320);
        let about_400_ms = |d: Duration| (d.as_secs_f64() - 0.4).abs() < 0.01;
        a_period_passes(&t, 102);
        let period = t.put_aside_for();
        assert!(about_400_ms(period), "{period:?}");
        a_period_passes(&t, 128);
        let period = t.put_aside_for();
        assert!(about_400_ms(period), "{period:?}");
        // No call ending: twice as long again.
        a_period_passes(&t, 0);
        let period = t.put_aside_for();
        assert!((period.as_secs_f64() - 0.8).abs() < 0.02, "{period:?}");
        {
            let mut aside = t.aside.lock().unwrap();
            aside.period = PUT_ASIDE_AT_MOST;
            aside.since -= PUT_ASIDE_AT_MOST;
        }
        assert_eq!(t.put_aside_for(), PUT_ASIDE_AT_MOST);
        // Nothing put aside for more than two periods: back to the least.
        t.aside.lock().unwrap().last -= PUT_ASIDE_AT_MOST * 2 + Duration::from_millis(1);
        assert_eq!(t.put_aside_for(), PUT_ASIDE_AT_LEAST);
    }

    /// A handler takes on four queues per call it may make at once (256 by default),
    /// whatever the limit of calls over all handlers.
    #[test]
    fn a_handler_takes_on_four_queues_per_call_whatever_the_engine_wide_limit() {
        let config = EngineConfig::default();
        assert_eq!(queues_per_handler(&config), 256);
        let mut config = config;
        config.per_handler = 200;
        assert_eq!(queues_per_handler(&config), 800);
        config.max_in_flight = 5000;
        assert_eq!(queues_per_handler(&config), 800);
    }
}
