//! Group commit for the SQLite writer: write transactions that follow each other on the
//! one writer connection share a single database transaction, each in a savepoint of its
//! own (but the first, alone in it, and the undoable ones: see [`Undo`]), and the group
//! is committed once — when no writer
//! is waiting (after one round of the scheduler, when the last group was shared: see
//! [`commit`]), or when it is 64 members or 2 ms old. Every member's `commit()` returns
//! only after the group's COMMIT, so nothing is acknowledged before it is durable; a
//! member that fails or rolls back undoes only its own work.
//!
//! Why: each COMMIT writes every page the transaction touched (the client, the event,
//! the delivery and their indexes) to the WAL. Under load most of those pages are the
//! same from one transaction to the next, so a group writes them once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::handoff::Reserved;
use crate::sql::{LiteConn, LitePool};
use crate::StoreError;

const MAX_MEMBERS: usize = 64;
const MAX_AGE: Duration = Duration::from_millis(2);
/// How long a member waits for the group before committing it itself (the writer that
/// was expected to continue the group may have gone away).
const TAKE_OVER_AFTER: Duration = Duration::from_millis(5);

/// The group state of one writer connection.
pub(crate) struct Group {
    /// Nanoseconds the writer connection was in use, by anyone (see [`WriterStats`]).
    busy_nanos: AtomicU64,
    /// Groups committed, and the transactions they held.
    commits: AtomicU64,
    committed: AtomicU64,
    /// Members of the group committed last.
    last_size: AtomicU64,
    /// Tasks waiting for the writer: while there are some, the group stays open.
    waiting: AtomicUsize,
    state: Mutex<State>,
    /// The highest group epoch that has ended (committed or failed).
    done: watch::Sender<u64>,
    /// Recent groups that failed: their COMMIT, with the error, or undone.
    failed: Mutex<VecDeque<(u64, Failure)>>,
    /// How many times [`MAX_AGE`] and [`TAKE_OVER_AFTER`] are taken: 1, but for tests
    /// that need a group to form as they arrange it on a loaded machine (see
    /// [`crate::Db::widen_group_window`]).
    window: AtomicU64,
}

/// How a group ended without being committed.
enum Failure {
    Commit(String),
    /// Rolled back because an undoable member failed after writing (see [`Undo`]).
    Undone,
}

/// What a member's failure may undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Only itself: it works in a savepoint (unless it is the first of its group).
    Alone,
    /// The whole group, if it fails after writing, when every member before it is
    /// undoable too: their commits return [`StoreError::Undone`] and their callers run
    /// them again. Such a member needs no savepoint. (As with a group whose COMMIT
    /// fails, a member that refused to write because of what an earlier one wrote may
    /// have seen work that is then undone; it refused on a state about to be written,
    /// as it would have a moment later.) A savepoint copies every page its
    /// member changes into a journal of its own, in case it is undone: under load
    /// about 8 % of the server's CPU for rollbacks that never came (the pipeline's
    /// errors come from its checks, before anything is written).
    WithGroup,
}

struct State {
    open: bool,
    epoch: u64,
    /// Members that released their savepoint and wait for the COMMIT.
    pending: usize,
    /// Whether every member so far is undoable with the group (see [`Undo`]).
    undoable: bool,
    started: Instant,
    /// What those members hand over once the group is committed (see
    /// [`crate::handoff`]). Whoever commits the group sends it: a member whose task is
    /// dropped while it waits still has its deliveries handed over.
    handoffs: Vec<Reserved>,
}

/// A transaction's place in a group.
pub(crate) struct Member {
    group: Arc<Group>,
    epoch: u64,
    /// It opened the group: alone in the transaction, it needs no savepoint (undoing it
    /// is rolling the transaction back). A savepoint copies every page its member
    /// changes, which a lone writer, the usual case at low load, paid for nothing.
    first: bool,
    /// It works in a savepoint of its own.
    savepoint: bool,
    /// The connection's count of changed rows when it began: if it has not moved, an
    /// undoable member that fails has nothing to undo.
    changes_before: u64,
}

impl Group {
    pub(crate) fn new() -> Arc<Group> {
        Arc::new(Group {
            busy_nanos: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            last_size: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            state: Mutex::new(State {
                open: false,
                epoch: 0,
                pending: 0,
                undoable: true,
                started: Instant::now(),
                handoffs: Vec::new(),
            }),
            done: watch::channel(0).0,
            failed: Mutex::new(VecDeque::new()),
            window: AtomicU64::new(1),
        })
    }

    /// Takes [`MAX_AGE`] and [`TAKE_OVER_AFTER`] `times` times over.
    pub(crate) fn widen_window(&self, times: u32) {
        self.window
            .store(u64::from(times.max(1)), Ordering::Relaxed);
    }

    fn max_age(&self) -> Duration {
        MAX_AGE * self.window.load(Ordering::Relaxed) as u32
    }

    fn take_over_after(&self) -> Duration {
        TAKE_OVER_AFTER * self.window.load(Ordering::Relaxed) as u32
    }
}

/// How SQLite's one writer was used since the process started.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterStats {
    /// Time the writer connection was held (transactions, their COMMITs, statements
    /// outside transactions, checkpoints that take it). Close to the elapsed time, writes
    /// queue for it: it is the limit of this database.
    pub busy: Duration,
    /// Group commits.
    pub commits: u64,
    /// Write transactions those commits made durable.
    pub transactions: u64,
    /// Writers waiting for the writer connection now.
    pub waiting: usize,
}

impl Group {
    /// Counts a spell of the writer connection being held.
    pub(crate) fn held_for(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            busy: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
            commits: self.commits.load(Ordering::Relaxed),
            transactions: self.committed.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::SeqCst),
        }
    }
}

/// A writer on its way: a transaction queued on the writer thread (see
/// [`crate::Db::on_writer`]) that has not asked for the writer yet counts as waiting,
/// so that the group stays open for it. Its task drops this as it starts.
pub(crate) struct Coming(Arc<Group>);

impl Group {
    pub(crate) fn coming(self: &Arc<Self>) -> Coming {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Coming(self.clone())
    }
}

impl Drop for Coming {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Decrements the waiting count even when the waiting task is cancelled.
struct Waiting<'a>(&'a Group);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one transaction control statement, prepared once per connection and reused:
/// every write transaction runs two or three of them, and parsing them again each time
/// was a visible share of a short transaction.
fn exec(c: &mut LiteConn, sql: &str) -> Result<(), StoreError> {
    c.raw().prepare_cached(sql)?.raw_execute()?;
    Ok(())
}

/// Undoes the member's savepoint and leaves it.
fn undo_member(c: &mut LiteConn) {
    let _ = exec(c, "ROLLBACK TO member");
    let _ = exec(c, "RELEASE member");
}

/// Takes the writer and starts a member: joins the open group or opens one.
pub(crate) async fn begin(
    pool: &Arc<LitePool>,
    group: &Arc<Group>,
    undo: Undo,
) -> Result<(LiteConn, Member), StoreError> {
    let mut c = {
        group.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(group);
        pool.acquire().await?
    };
    lost_transaction(&mut c, group);
    let undoable = undo == Undo::WithGroup;
    let (epoch, first, savepoint) = {
        let mut st = group.state.lock().expect("not poisoned");
        let first = !st.open;
        if first {
            exec(&mut c, "BEGIN IMMEDIATE")?;
            st.open = true;
            st.epoch += 1;
            st.pending = 0;
            st.undoable = true;
            st.started = Instant::now();
        }
        // Undoing the group is fair to its members only if every one can run again.
        let undoes_group = undoable && st.undoable;
        let savepoint = !(first || undoes_group);
        st.undoable &= undoable;
        (st.epoch, first, savepoint)
    };
    if savepoint {
        if let Err(e) = exec(&mut c, "SAVEPOINT member") {
            end_if_idle(&mut c, group);
            return Err(e);
        }
    }
    let changes_before = c.raw().total_changes();
    Ok((
        c,
        Member {
            group: group.clone(),
            epoch,
            first,
            savepoint,
            changes_before,
        },
    ))
}

/// Commits a member: keeps its savepoint's work in the group and returns once the group
/// is committed; what it `hands_over` goes when the group is committed.
pub(crate) async fn commit(
    mut c: LiteConn,
    m: Member,
    hands_over: Option<Reserved>,
) -> Result<(), StoreError> {
    if lost_transaction(&mut c, &m.group) {
        return Err(StoreError::Commit(LOST.into()));
    }
    if m.savepoint {
        if let Err(e) = exec(&mut c, "RELEASE member") {
            undo_member(&mut c);
            end_if_idle(&mut c, &m.group);
            return Err(e);
        }
    }
    let (commit_now, idle) = {
        let mut st = m.group.state.lock().expect("not poisoned");
        st.pending += 1;
        st.handoffs.extend(hands_over);
        let full = st.pending >= MAX_MEMBERS || st.started.elapsed() >= m.group.max_age();
        let idle = m.group.waiting.load(Ordering::SeqCst) == 0;
        // Under load (the last group was shared) the next writers are usually just
        // behind, runnable or with their request in the socket: worth a round of the
        // scheduler before committing (lingering). A lone writer commits at once.
        let shared = m.group.last_size.load(Ordering::Relaxed) > 1;
        (full || (idle && !shared), idle)
    };
    if commit_now {
        return commit_group(&mut c, &m.group);
    }
    let pool = c.pool();
    drop(c); // a waiting writer continues the group, or, idle, this member lingers
    if let (true, Some(pool)) = (idle, &pool) {
        // Nobody else is due to commit the group: if this member's future is dropped
        // meanwhile (a client gone), the guard has a task commit it.
        let mut guard = Lingering(Some((m.group.clone(), m.epoch, pool.clone())));
        // One round: tokio runs this task again only after the tasks ready now and after
        // reading the sockets that are. Whoever joined meanwhile has taken the writer
        // first (it is handed out in order) and lingered or committed in turn.
        tokio::task::yield_now().await;
        let taken_over = take_over(&m.group, m.epoch, pool).await;
        guard.0 = None;
        taken_over?;
    }
    wait(&m, pool).await
}

/// Undoes a member (an error, or a transaction dropped without commit).
pub(crate) fn abandon(c: &mut LiteConn, m: &Member) {
    if lost_transaction(c, &m.group) {
        return;
    }
    if m.first {
        // Nothing else is in the transaction yet (the next member joins only once this
        // one gives the writer back): rolling it back undoes exactly this member.
        let _ = end_group(c, &m.group);
        return;
    }
    if m.savepoint {
        undo_member(c);
    } else if c.raw().total_changes() != m.changes_before {
        // Its writes are mixed with those of the members before it, all undoable.
        undo_group(c, &m.group);
        return;
    }
    end_if_idle(c, &m.group);
}

const LOST: &str = "SQLite rolled the transaction back after an error";

/// Whether SQLite rolled the open group's transaction back by itself (it may after
/// SQLITE_FULL, IOERR or NOMEM): the connection is out of any transaction while the
/// group is open. The group then ends as failed, before anyone writes outside a
/// transaction (each statement committing alone) believing to be in it.
fn lost_transaction(c: &mut LiteConn, group: &Group) -> bool {
    let mut st = group.state.lock().expect("not poisoned");
    if !st.open || !c.raw().is_autocommit() {
        return false;
    }
    end_failed(group, &mut st, Failure::Commit(LOST.into()));
    true
}

/// Rolls the open group back: its members' commits return [`StoreError::Undone`].
fn undo_group(c: &mut LiteConn, group: &Group) {
    let _ = exec(c, "ROLLBACK");
    let mut st = group.state.lock().expect("not poisoned");
    end_failed(group, &mut st, Failure::Undone);
}

/// Ends the open group, whose transaction is gone, as failed: nothing it leased is
/// handed over (the deliveries are gone with the rest), and its members learn why.
fn end_failed(group: &Group, st: &mut State, failure: Failure) {
    st.open = false;
    st.handoffs.clear();
    record_failure(group, st.epoch, failure);
    group.done.send_replace(st.epoch);
}

/// Remembers how the group of `epoch` ended, for its members to learn.
fn record_failure(group: &Group, epoch: u64, failure: Failure) {
    let mut failed = group.failed.lock().expect("not poisoned");
    failed.push_back((epoch, failure));
    if failed.len() > 64 {
        failed.pop_front();
    }
}

/// With nobody waiting, ends the group now.
fn end_if_idle(c: &mut LiteConn, group: &Group) {
    if group.waiting.load(Ordering::SeqCst) == 0 {
        let _ = end_group(c, group);
    }
}

/// Ends the open group, if any: committed if members wait for it, else rolled back (it
/// holds nothing).
fn end_group(c: &mut LiteConn, group: &Group) -> Result<(), StoreError> {
    let (open, pending) = {
        let st = group.state.lock().expect("not poisoned");
        (st.open, st.pending)
    };
    if !open {
        return Ok(());
    }
    if pending > 0 {
        return commit_group(c, group);
    }
    let _ = exec(c, "ROLLBACK");
    let mut st = group.state.lock().expect("not poisoned");
    st.open = false;
    group.done.send_replace(st.epoch);
    Ok(())
}

/// COMMITs the open group and tells its members.
fn commit_group(c: &mut LiteConn, group: &Group) -> Result<(), StoreError> {
    let result = exec(c, "COMMIT");
    if result.is_err() {
        let _ = exec(c, "ROLLBACK");
    }
    let mut st = group.state.lock().expect("not poisoned");
    st.open = false;
    let handoffs = std::mem::take(&mut st.handoffs);
    match &result {
        Ok(()) => {
            group.last_size.store(st.pending as u64, Ordering::Relaxed);
            group.commits.fetch_add(1, Ordering::Relaxed);
            group
                .committed
                .fetch_add(st.pending as u64, Ordering::Relaxed);
            handoffs.into_iter().for_each(Reserved::send);
        }
        Err(e) => record_failure(group, st.epoch, Failure::Commit(e.to_string())),
    }
    group.done.send_replace(st.epoch);
    result
}

/// Waits until the member's group has ended; takes the group over and commits it if
/// nobody else does.
async fn wait(m: &Member, pool: Option<Arc<LitePool>>) -> Result<(), StoreError> {
    let mut done = m.group.done.subscribe();
    loop {
        if *done.borrow_and_update() >= m.epoch {
            let failed = m.group.failed.lock().expect("not poisoned");
            return match failed.iter().find(|(e, _)| *e == m.epoch) {
                Some((_, Failure::Commit(error))) => Err(StoreError::Commit(error.clone())),
                Some((_, Failure::Undone)) => Err(StoreError::Undone),
                None => Ok(()),
            };
        }
        tokio::select! {
            _ = done.changed() => {}
            _ = tokio::time::sleep(m.group.take_over_after()) => {
                if let Some(pool) = &pool {
                    take_over(&m.group, m.epoch, pool).await?;
                }
            }
        }
    }
}

/// A lingering member's group, committed by a task of its own if the member is dropped
/// before it has taken the writer over.
struct Lingering(Option<(Arc<Group>, u64, Arc<LitePool>)>);

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some((group, epoch, pool)), Ok(runtime)) =
            (self.0.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = take_over(&group, epoch, &pool).await {
                tracing::warn!(error = %e, "committing the group of a dropped writer failed");
            }
        });
    }
}

/// Takes the writer and commits the group of `epoch` if it is still open; gives up as
/// soon as the group has ended, without waiting for the writer (which someone may hold
/// for a long transaction of their own, an import, having committed the group first).
async fn take_over(group: &Group, epoch: u64, pool: &Arc<LitePool>) -> Result<(), StoreError> {
    let mut done = group.done.subscribe();
    let mut c = tokio::select! {
        c = pool.acquire() => c?,
        _ = done.wait_for(|ended| *ended >= epoch) => return Ok(()),
    };
    let ours = {
        let st = group.state.lock().expect("not poisoned");
        st.open && st.epoch == epoch
    };
    if ours {
        let _ = commit_group(&mut c, group);
    }
    Ok(())
}

/// Takes the writer for a long transaction of its own (an import): the open group is
/// committed first, so that its members do not wait for the long one.
pub(crate) async fn begin_alone(
    pool: &Arc<LitePool>,
    group: &Arc<Group>,
) -> Result<LiteConn, StoreError> {
    let mut c = acquire_plain(pool, group).await?;
    exec(&mut c, "BEGIN IMMEDIATE")?;
    Ok(c)
}

/// Takes the writer outside any group (a statement in autocommit): the open group is
/// ended first, or the statement would run inside it and share its fate.
pub(crate) async fn acquire_plain(
    pool: &Arc<LitePool>,
    group: &Arc<Group>,
) -> Result<LiteConn, StoreError> {
    let mut c = {
        group.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(group);
        pool.acquire().await?
    };
    end_group(&mut c, group)?;
    Ok(c)
}
