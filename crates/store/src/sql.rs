//! One query interface over two drivers: sqlx (`Any`) for PostgreSQL, and rusqlite for
//! SQLite, whose statements run in the calling thread.
//!
//! Why not sqlx for SQLite too: its SQLite connection lives on a thread of its own and
//! every statement is a hand-off to it and back. A write transaction of five statements
//! then costs ten thread wake-ups while it holds the only writer, and under load those
//! hand-offs, not SQLite, bound the whole server. A SQLite statement on an open
//! connection takes microseconds, so running it in place is both faster and cheaper.
//!
//! The interface mirrors sqlx's (`query(sql).bind(v).fetch_one(conn)`), with `$N`
//! parameters on both databases.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock};

use rusqlite::types::Value as LiteValue;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::statements::Lite;
use crate::StoreError;

/// A value bound to a `$N` parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    /// A NULL of the given column kind: PostgreSQL types parameters, and a NULL typed
    /// as an integer does not go into a text column.
    Null(NullKind),
    Int(i64),
    Real(f64),
    Text(String),
}

/// The type of a bound NULL.
#[derive(Debug, Clone, Copy)]
pub enum NullKind {
    Int,
    Real,
    Text,
}

/// Values that can be bound.
pub trait IntoArg {
    fn into_arg(self) -> Arg;
    /// The NULL of this type, for `None`.
    fn null() -> Arg {
        Arg::Null(NullKind::Int)
    }
}

impl IntoArg for i64 {
    fn into_arg(self) -> Arg {
        Arg::Int(self)
    }
}
impl IntoArg for i32 {
    fn into_arg(self) -> Arg {
        Arg::Int(self.into())
    }
}
impl IntoArg for &i64 {
    fn into_arg(self) -> Arg {
        Arg::Int(*self)
    }
}
impl IntoArg for u32 {
    fn into_arg(self) -> Arg {
        Arg::Int(self.into())
    }
}
impl IntoArg for bool {
    fn into_arg(self) -> Arg {
        Arg::Int(self.into())
    }
}
impl IntoArg for f64 {
    fn into_arg(self) -> Arg {
        Arg::Real(self)
    }
    fn null() -> Arg {
        Arg::Null(NullKind::Real)
    }
}
impl IntoArg for String {
    fn into_arg(self) -> Arg {
        Arg::Text(self)
    }
    fn null() -> Arg {
        Arg::Null(NullKind::Text)
    }
}
impl IntoArg for &str {
    fn into_arg(self) -> Arg {
        Arg::Text(self.to_string())
    }
    fn null() -> Arg {
        Arg::Null(NullKind::Text)
    }
}
impl IntoArg for &String {
    fn into_arg(self) -> Arg {
        Arg::Text(self.clone())
    }
    fn null() -> Arg {
        Arg::Null(NullKind::Text)
    }
}
impl<T: IntoArg> IntoArg for Option<T> {
    fn into_arg(self) -> Arg {
        match self {
            Some(v) => v.into_arg(),
            None => T::null(),
        }
    }
    fn null() -> Arg {
        T::null()
    }
}

/// A statement with its arguments.
#[derive(Debug, Clone)]
pub struct Query {
    sql: String,
    args: Vec<Arg>,
}

/// Starts a statement.
pub fn query(sql: &str) -> Query {
    Query {
        sql: sql.to_string(),
        args: Vec::new(),
    }
}

/// Starts a statement whose answer is the first column of its row.
pub fn query_scalar<T: Decode>(sql: &str) -> Scalar<T> {
    Scalar {
        query: query(sql),
        _t: std::marker::PhantomData,
    }
}

/// What an executed statement changed.
#[derive(Debug)]
pub struct Done {
    rows: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows
    }
}

impl Query {
    /// Binds the next `$N`.
    pub fn bind(mut self, v: impl IntoArg) -> Self {
        self.args.push(v.into_arg());
        self
    }

    /// Binds a value already turned into an [`Arg`].
    pub fn bind_arg(mut self, v: Arg) -> Self {
        self.args.push(v);
        self
    }

    pub async fn execute(self, conn: &mut Conn) -> Result<Done, StoreError> {
        match conn.backend() {
            Backend::Any(c) => {
                let done = self.any().execute(c).await?;
                Ok(Done {
                    rows: done.rows_affected(),
                })
            }
            Backend::Lite(c) => lite_execute(c, &self.sql, &self.args),
        }
    }

    pub async fn fetch_all(self, conn: &mut Conn) -> Result<Vec<Row>, StoreError> {
        match conn.backend() {
            Backend::Any(c) => Ok(self
                .any()
                .fetch_all(c)
                .await?
                .into_iter()
                .map(Row::Any)
                .collect()),
            Backend::Lite(c) => lite_rows(c, &self.sql, &self.args, usize::MAX),
        }
    }

    pub async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<Row>, StoreError> {
        match conn.backend() {
            Backend::Any(c) => Ok(self.any().fetch_optional(c).await?.map(Row::Any)),
            Backend::Lite(c) => Ok(lite_rows(c, &self.sql, &self.args, 1)?.into_iter().next()),
        }
    }

    pub async fn fetch_one(self, conn: &mut Conn) -> Result<Row, StoreError> {
        self.fetch_optional(conn)
            .await?
            .ok_or(StoreError::Sqlx(sqlx::Error::RowNotFound))
    }

    /// Runs an `INSERT … RETURNING id` and gives the new row's id. SQLite runs the
    /// statement without its RETURNING clause and reads the connection's last rowid:
    /// with RETURNING it opened a temporary table for every insert, to hold one id.
    pub async fn insert_id(self, conn: &mut Conn) -> Result<i64, StoreError> {
        match conn.backend() {
            Backend::Any(c) => Ok(self.any().fetch_one(c).await?.try_get(0usize)?),
            Backend::Lite(c) => {
                let sql = self.sql.trim_end();
                let Some(insert) = sql.strip_suffix("RETURNING id") else {
                    return Err(StoreError::Corrupt(format!(
                        "insert_id needs an INSERT … RETURNING id: {sql}"
                    )));
                };
                lite_execute(c, insert, &self.args)?;
                Ok(c.conn().last_insert_rowid())
            }
        }
    }

    fn any(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let mut q = sqlx::query(&self.sql);
        for a in &self.args {
            q = match a {
                Arg::Null(NullKind::Int) => q.bind(None::<i64>),
                Arg::Null(NullKind::Real) => q.bind(None::<f64>),
                Arg::Null(NullKind::Text) => q.bind(None::<String>),
                Arg::Int(i) => q.bind(*i),
                Arg::Real(f) => q.bind(*f),
                Arg::Text(t) => q.bind(t.as_str()),
            };
        }
        q
    }
}

/// A statement answering one value.
pub struct Scalar<T> {
    query: Query,
    _t: std::marker::PhantomData<T>,
}

impl<T: Decode> Scalar<T> {
    pub fn bind(mut self, v: impl IntoArg) -> Self {
        self.query = self.query.bind(v);
        self
    }

    pub async fn fetch_one(self, conn: &mut Conn) -> Result<T, StoreError> {
        self.query.fetch_one(conn).await?.try_get(0usize)
    }

    pub async fn fetch_all(self, conn: &mut Conn) -> Result<Vec<T>, StoreError> {
        self.query
            .fetch_all(conn)
            .await?
            .iter()
            .map(|row| row.try_get(0usize))
            .collect()
    }

    pub async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<T>, StoreError> {
        match self.query.fetch_optional(conn).await? {
            Some(row) => Ok(Some(row.try_get(0usize)?)),
            None => Ok(None),
        }
    }
}

/// A result row of either driver.
pub enum Row {
    Any(AnyRow),
    Lite(LiteRow),
}

/// A SQLite row, read out of its statement.
pub struct LiteRow {
    columns: Arc<Vec<String>>,
    values: Vec<LiteValue>,
}

/// A column by name or position.
pub trait ColumnIndex: sqlx::ColumnIndex<AnyRow> + Copy + std::fmt::Debug {
    fn position(self, columns: &[String]) -> Option<usize>;
}

impl ColumnIndex for &str {
    fn position(self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c == self)
    }
}

impl ColumnIndex for usize {
    fn position(self, columns: &[String]) -> Option<usize> {
        (self < columns.len()).then_some(self)
    }
}

impl Row {
    /// The value of a column, decoded.
    pub fn try_get<T: Decode, I: ColumnIndex>(&self, index: I) -> Result<T, StoreError> {
        match self {
            Row::Any(row) => Ok(T::from_any(row, index)?),
            Row::Lite(row) => {
                let i = index.position(&row.columns).ok_or_else(|| {
                    StoreError::Corrupt(format!("no column {index:?} in the result"))
                })?;
                T::from_lite(&row.values[i]).ok_or_else(|| {
                    StoreError::Corrupt(format!("column {index:?}: unexpected type"))
                })
            }
        }
    }
}

/// Types a column decodes into.
pub trait Decode: Sized {
    fn from_any<I: ColumnIndex>(row: &AnyRow, index: I) -> Result<Self, sqlx::Error>;
    fn from_lite(v: &LiteValue) -> Option<Self>;
}

macro_rules! decode_via_sqlx {
    ($t:ty, $lite:expr) => {
        impl Decode for $t {
            fn from_any<I: ColumnIndex>(row: &AnyRow, index: I) -> Result<Self, sqlx::Error> {
                row.try_get::<$t, I>(index)
            }
            fn from_lite(v: &LiteValue) -> Option<Self> {
                let f: fn(&LiteValue) -> Option<$t> = $lite;
                f(v)
            }
        }
        impl Decode for Option<$t> {
            fn from_any<I: ColumnIndex>(row: &AnyRow, index: I) -> Result<Self, sqlx::Error> {
                row.try_get::<Option<$t>, I>(index)
            }
            fn from_lite(v: &LiteValue) -> Option<Self> {
                match v {
                    LiteValue::Null => Some(None),
                    v => <$t as Decode>::from_lite(v).map(Some),
                }
            }
        }
    };
}

decode_via_sqlx!(i64, |v| match v {
    LiteValue::Integer(i) => Some(*i),
    _ => None,
});
decode_via_sqlx!(i32, |v| match v {
    LiteValue::Integer(i) => i32::try_from(*i).ok(),
    _ => None,
});
decode_via_sqlx!(bool, |v| match v {
    LiteValue::Integer(i) => Some(*i != 0),
    _ => None,
});
decode_via_sqlx!(f64, |v| match v {
    LiteValue::Real(f) => Some(*f),
    LiteValue::Integer(i) => Some(*i as f64),
    _ => None,
});
decode_via_sqlx!(String, |v| match v {
    LiteValue::Text(t) => Some(t.clone()),
    _ => None,
});

/// A connection: a pooled sqlx one, a sqlx transaction, or a SQLite connection of our
/// own (inside a transaction or not).
pub struct Conn {
    inner: Inner,
}

enum Inner {
    AnyPooled(sqlx::pool::PoolConnection<Any>),
    AnyTx(sqlx::Transaction<'static, Any>),
    Lite(LiteConn),
}

enum Backend<'a> {
    Any(&'a mut AnyConnection),
    Lite(&'a mut Lite),
}

impl Conn {
    /// Whether this is a SQLite connection (else PostgreSQL).
    pub fn is_sqlite(&self) -> bool {
        matches!(self.inner, Inner::Lite(_))
    }

    fn backend(&mut self) -> Backend<'_> {
        match &mut self.inner {
            Inner::AnyPooled(c) => Backend::Any(c),
            Inner::AnyTx(t) => Backend::Any(t),
            Inner::Lite(c) => Backend::Lite(c.conn.as_mut().expect("connection present")),
        }
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        !matches!(self.inner, Inner::Lite(_))
    }

    /// The sqlx connection under this one, for the few calls that need sqlx itself
    /// (PostgreSQL only).
    pub fn as_any(&mut self) -> Option<&mut AnyConnection> {
        match self.backend() {
            Backend::Any(c) => Some(c),
            Backend::Lite(_) => None,
        }
    }
}

/// A write transaction: commit it, or it is rolled back when dropped.
pub struct Tx {
    conn: Conn,
    open: bool,
    /// Its place in the SQLite writer's group commit.
    member: Option<crate::group_commit::Member>,
    /// Where it may hand fresh deliveries over (short transactions only), and
    /// what it leased to hand over after its commit.
    handoffs: Option<crate::handoff::Handoffs>,
    reserved: Option<crate::handoff::Reserved>,
    /// Whether it queued deliveries that only a claim will start.
    to_claim: bool,
    /// PostgreSQL: the deliveries it queued behind others, and where they go once it has
    /// committed (see [`crate::head_checks`]).
    behind: Vec<i64>,
    head_checks: Option<crate::head_checks::HeadChecks>,
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Tx {
    fn new(conn: Conn, member: Option<crate::group_commit::Member>) -> Tx {
        Tx {
            conn,
            open: true,
            member,
            handoffs: None,
            reserved: None,
            to_claim: false,
            behind: Vec::new(),
            head_checks: None,
        }
    }

    /// Lets it pass the deliveries it queues behind others to `checks` after its commit.
    pub(crate) fn offer_head_checks(&mut self, checks: crate::head_checks::HeadChecks) {
        self.head_checks = Some(checks);
    }

    /// Notes a delivery it queued behind another one, whose queue is looked at again
    /// after the commit. Only on PostgreSQL: on SQLite, whose one writer sees every
    /// transaction in turn, the transactions flag the heads themselves.
    pub(crate) fn queued_behind(&mut self, id: i64) {
        if self.conn.is_postgres() {
            self.behind.push(id);
        }
    }

    /// Lets it hand fresh deliveries over to `handoffs` (a short transaction of the
    /// process whose engine opened them).
    pub(crate) fn offer_handoffs(&mut self, handoffs: crate::handoff::Handoffs) {
        self.handoffs = Some(handoffs);
    }

    /// Its place in the hand-over of fresh deliveries (see [`crate::handoff`]): reserved
    /// at the first call, none when the hand-over is closed, full or not for this
    /// transaction.
    pub(crate) fn handoff(&mut self) -> Option<&mut crate::handoff::Reserved> {
        if self.reserved.is_none() {
            self.reserved = self.handoffs.take()?.reserve();
        }
        self.reserved.as_mut()
    }

    /// Notes that it queued deliveries that wait for a claim.
    pub(crate) fn queued_to_claim(&mut self) {
        self.to_claim = true;
    }

    /// Whether it queued deliveries that wait for a claim: after its commit, the
    /// delivery engines must be woken for them (the ones handed over need no claim).
    pub fn has_deliveries_to_claim(&self) -> bool {
        self.to_claim
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        let hands_over = self.reserved.take().filter(|r| r.holds_any());
        let behind = std::mem::take(&mut self.behind);
        let head_checks = self.head_checks.take();
        match std::mem::replace(&mut self.conn.inner, Inner::Lite(LiteConn::empty())) {
            // In a task of its own when something follows the COMMIT: if the caller's
            // task is dropped mid-COMMIT (a client that went away), the commit still ends
            // and its deliveries are handed over instead of waiting for their leases to
            // run out, and those it queued behind others are looked at (see
            // `crate::head_checks`) instead of waiting for the engine's walk.
            Inner::AnyTx(t) if hands_over.is_some() || !behind.is_empty() => {
                tokio::spawn(async move {
                    t.commit().await?;
                    hands_over
                        .into_iter()
                        .for_each(crate::handoff::Reserved::send);
                    if let Some(checks) = head_checks {
                        checks.add(&behind);
                    }
                    Ok::<_, StoreError>(())
                })
                .await
                .map_err(|e| StoreError::Commit(e.to_string()))??
            }
            Inner::AnyTx(t) => t.commit().await?,
            Inner::Lite(c) if self.member.is_some() => {
                let member = self.member.take().expect("checked");
                crate::group_commit::commit(c, member, hands_over).await?;
            }
            Inner::Lite(mut c) => {
                let result = c.raw().execute_batch("COMMIT");
                if result.is_err() {
                    // A failed COMMIT leaves the transaction open: end it before the
                    // connection goes back to the pool.
                    let _ = c.raw().execute_batch("ROLLBACK");
                }
                result?;
                hands_over
                    .into_iter()
                    .for_each(crate::handoff::Reserved::send);
            }
            Inner::AnyPooled(_) => {}
        }
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<(), StoreError> {
        self.open = false;
        match std::mem::replace(&mut self.conn.inner, Inner::Lite(LiteConn::empty())) {
            Inner::AnyTx(t) => t.rollback().await?,
            Inner::Lite(mut c) if self.member.is_some() => {
                let member = self.member.take().expect("checked");
                crate::group_commit::abandon(&mut c, &member);
            }
            Inner::Lite(mut c) => {
                c.raw().execute_batch("ROLLBACK")?;
            }
            Inner::AnyPooled(_) => {}
        }
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            if let Inner::Lite(c) = &mut self.conn.inner {
                if c.conn.is_none() {
                    return;
                }
                // Dropped without commit (an error on the way): undo it, as sqlx does.
                match self.member.take() {
                    Some(member) => crate::group_commit::abandon(c, &member),
                    None => {
                        let _ = c.raw().execute_batch("ROLLBACK");
                    }
                }
            }
        }
    }
}

/// A pool of either driver.
#[derive(Clone)]
pub enum Pool {
    Any(sqlx::AnyPool),
    Lite(Arc<LitePool>),
}

impl Pool {
    /// Takes a connection, waiting for one to be free.
    pub async fn acquire(&self) -> Result<Conn, StoreError> {
        Ok(Conn {
            inner: match self {
                Pool::Any(p) => Inner::AnyPooled(p.acquire().await?),
                Pool::Lite(p) => Inner::Lite(p.acquire_outside_group().await?),
            },
        })
    }

    /// Starts a write transaction: `BEGIN IMMEDIATE` on SQLite, so it never fails
    /// half-way on a lock upgrade.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        self.begin_as(crate::group_commit::Undo::Alone).await
    }

    /// Starts a write transaction that its caller runs again when its commit returns
    /// [`StoreError::Undone`] (see [`crate::Db::begin_undoable`]).
    pub async fn begin_undoable(&self) -> Result<Tx, StoreError> {
        self.begin_as(crate::group_commit::Undo::WithGroup).await
    }

    async fn begin_as(&self, undo: crate::group_commit::Undo) -> Result<Tx, StoreError> {
        let conn = match self {
            Pool::Any(p) => Conn {
                inner: Inner::AnyTx(p.begin().await?),
            },
            Pool::Lite(p) => match &p.group {
                Some(group) => {
                    let (c, member) = crate::group_commit::begin(p, group, undo).await?;
                    return Ok(Tx::new(
                        Conn {
                            inner: Inner::Lite(c),
                        },
                        Some(member),
                    ));
                }
                None => {
                    let mut c = p.acquire().await?;
                    c.raw().execute_batch("BEGIN IMMEDIATE")?;
                    Conn {
                        inner: Inner::Lite(c),
                    }
                }
            },
        };
        Ok(Tx::new(conn, None))
    }

    /// Starts a write transaction that will run long (an import): on SQLite it does not
    /// join a group commit, so short transactions are not held up waiting for it.
    pub async fn begin_long(&self) -> Result<Tx, StoreError> {
        match self {
            Pool::Lite(p) => match &p.group {
                Some(group) => {
                    let c = crate::group_commit::begin_alone(p, group).await?;
                    Ok(Tx::new(
                        Conn {
                            inner: Inner::Lite(c),
                        },
                        None,
                    ))
                }
                None => self.begin().await,
            },
            Pool::Any(_) => self.begin().await,
        }
    }

    pub async fn close(&self) {
        match self {
            Pool::Any(p) => p.close().await,
            Pool::Lite(p) => p.close(),
        }
    }
}

/// SQLite connections to one file, handed out one holder at a time each.
pub struct LitePool {
    idle: Mutex<Vec<Lite>>,
    permits: Arc<Semaphore>,
    /// The writer's group commit (the write pool only).
    group: Option<Arc<crate::group_commit::Group>>,
}

/// A SQLite connection out of its pool; it goes back when dropped.
pub struct LiteConn {
    conn: Option<Lite>,
    pool: Option<Arc<LitePool>>,
    _permit: Option<OwnedSemaphorePermit>,
    /// When it was taken from its pool.
    since: std::time::Instant,
}

impl LiteConn {
    /// The connection itself.
    pub(crate) fn raw(&mut self) -> &mut rusqlite::Connection {
        self.conn.as_mut().expect("connection present").conn()
    }

    /// The pool it returns to.
    pub(crate) fn pool(&self) -> Option<Arc<LitePool>> {
        self.pool.clone()
    }

    fn empty() -> LiteConn {
        LiteConn {
            conn: None,
            pool: None,
            _permit: None,
            since: std::time::Instant::now(),
        }
    }
}

impl Drop for LiteConn {
    fn drop(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), &self.pool) {
            if let Some(group) = &pool.group {
                group.held_for(self.since.elapsed());
            }
            pool.idle.lock().expect("not poisoned").push(conn);
        }
    }
}

/// Makes SQLite's `lower` lower the case of all of Unicode, as PostgreSQL's does: the
/// built-in one only knows A to Z, so a search (`q`, lowered on both sides) for
/// "ÉCOLE" or "école" did not find "ÉCOLE" on SQLite. No index is on `lower`; searches
/// are its only use.
fn unicode_lower(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::{Value, ValueRef};
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("lower", 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).to_lowercase()),
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Text(i.to_string()),
            ValueRef::Real(f) => Value::Text(f.to_string()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    })
}

impl LitePool {
    /// The writer's group commit (none for a pool of readers).
    pub(crate) fn group(&self) -> Option<&Arc<crate::group_commit::Group>> {
        self.group.as_ref()
    }

    /// Opens the single writer connection, with group commit.
    pub fn open_writer(path: &str, setup: &str) -> Result<Arc<LitePool>, StoreError> {
        let setup = format!("{setup} {}", crate::checkpoint::WRITER_SETUP);
        let mut pool = Self::connect(path, 1, &setup)?;
        pool.group = Some(crate::group_commit::Group::new());
        let pool = Arc::new(pool);
        crate::checkpoint::start(path, &pool)?;
        Ok(pool)
    }

    /// Opens `size` connections to `path` with the given setup statements.
    pub fn open(path: &str, size: usize, setup: &str) -> Result<Arc<LitePool>, StoreError> {
        Ok(Arc::new(Self::connect(path, size, setup)?))
    }

    fn connect(path: &str, size: usize, setup: &str) -> Result<LitePool, StoreError> {
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size {
            let conn = rusqlite::Connection::open(path)?;
            conn.execute_batch(setup)?;
            unicode_lower(&conn)?;
            // rusqlite's cache keeps only the transaction control statements now (see
            // `group_commit::exec`); the rest are kept by `Lite`.
            conn.set_prepared_statement_cache_capacity(16);
            idle.push(Lite::new(conn));
        }
        Ok(LitePool {
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
            group: None,
        })
    }

    /// Whether the pool was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }

    /// A connection outside any group: on the writer, the open group is ended first, so
    /// that what runs next (a plain statement, the WAL checkpoint) does not share it.
    pub(crate) async fn acquire_outside_group(self: &Arc<Self>) -> Result<LiteConn, StoreError> {
        match &self.group {
            Some(group) => crate::group_commit::acquire_plain(self, group).await,
            None => self.acquire().await,
        }
    }

    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<LiteConn, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Corrupt("the database is closed".into()))?;
        let conn = self
            .idle
            .lock()
            .expect("not poisoned")
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a pooled connection went missing".into()))?;
        Ok(LiteConn {
            conn: Some(conn),
            pool: Some(self.clone()),
            _permit: Some(permit),
            since: std::time::Instant::now(),
        })
    }

    fn close(&self) {
        self.permits.close();
        self.idle.lock().expect("not poisoned").clear();
    }
}

/// A statement's SQL as SQLite runs it ([`numbered`]), the names of its columns, and the
/// number its prepared statements are kept by on each connection (see
/// [`crate::statements`]), by the text the caller wrote.
///
/// Why: every statement used to rewrite its SQL and collect its column names into new
/// strings, a few allocations and copies per statement and 3 % of the server under load,
/// for results that never change. Looking the text up costs one hash of it.
struct LiteSql {
    numbered: Box<str>,
    columns: OnceLock<Arc<Vec<String>>>,
    /// None for a text past [`LITE_SQL_KEPT`]: prepared for each run.
    id: Option<u32>,
}

/// Distinct SQL texts kept. Ours are a few hundred, and more where a statement is made
/// for a number of rows or a set of filters (a batch's placeholders, a rate upload's
/// last chunk, a list's filters); past this, a new text is rewritten each time instead
/// of kept, so memory stays bounded whatever requests come.
const LITE_SQL_KEPT: usize = 4096;

fn lite_sql(sql: &str) -> Arc<LiteSql> {
    // foldhash: the key is the whole SQL text, often hundreds of bytes, hashed for
    // every statement run; SipHash (the default) made that 1 % of the server.
    type Kept = HashMap<Box<str>, Arc<LiteSql>, foldhash::fast::RandomState>;
    static KEPT: LazyLock<RwLock<Kept>> = LazyLock::new(Default::default);
    if let Some(found) = KEPT.read().expect("not poisoned").get(sql) {
        return found.clone();
    }
    let mut kept = KEPT.write().expect("not poisoned");
    if let Some(found) = kept.get(sql) {
        return found.clone();
    }
    let full = kept.len() >= LITE_SQL_KEPT;
    let made = Arc::new(LiteSql {
        numbered: numbered(sql).into(),
        columns: OnceLock::new(),
        // Numbered under the write lock: one number per text, in every thread.
        id: (!full).then(|| kept.len() as u32),
    });
    if !full {
        kept.insert(sql.into(), made.clone());
    }
    made
}

/// The SQL for SQLite, with `$N` written `?N`. SQLite gives `?N` the index N itself, so
/// arguments bind by position, with the same meaning as sqlx gives `$N` (the same
/// number may appear in several places, and in several statements of one string).
/// `$N` would be a named parameter, numbered by order of appearance, whose name had to
/// be looked up and parsed for every argument of every statement. Our SQL has no `$`
/// inside literals.
fn numbered(sql: &str) -> std::borrow::Cow<'_, str> {
    let bytes = sql.as_bytes();
    let is_param = |i: usize| bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
    if !(0..bytes.len()).any(is_param) {
        return std::borrow::Cow::Borrowed(sql);
    }
    let out: Vec<u8> = (0..bytes.len())
        .map(|i| if is_param(i) { b'?' } else { bytes[i] })
        .collect();
    std::borrow::Cow::Owned(String::from_utf8(out).expect("only an ASCII byte was replaced"))
}

/// The statements of a string. Our SQL has no `;` inside literals, so splitting on it
/// is exact.
fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(';').map(str::trim).filter(|s| !s.is_empty())
}

fn lite_execute(conn: &mut Lite, sql: &str, args: &[Arg]) -> Result<Done, StoreError> {
    let mut rows = 0;
    let sql = lite_sql(sql);
    for (part, one) in statements(&sql.numbered).enumerate() {
        let key = sql.id.map(|id| (id, part as u32));
        rows += conn.run(key, one, args, |_| Ok(false))?;
    }
    Ok(Done { rows })
}

fn lite_rows(
    conn: &mut Lite,
    sql: &str,
    args: &[Arg],
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let sql = lite_sql(sql);
    let one = sql.numbered.trim().trim_end_matches(';');
    let mut out = Vec::new();
    let mut columns: Option<Arc<Vec<String>>> = None;
    conn.run(sql.id.map(|id| (id, 0)), one, args, |step| {
        let columns = columns.get_or_insert_with(|| {
            let names = || {
                Arc::new(
                    (0..step.column_count())
                        .map(|i| step.column_name(i))
                        .collect(),
                )
            };
            let kept = sql.columns.get_or_init(names).clone();
            // Names are kept by the text; a `*` over a table whose columns changed since
            // (SQLite prepares the statement again) gets this run's own.
            if kept.len() == step.column_count() {
                kept
            } else {
                names()
            }
        });
        let values = (0..columns.len())
            .map(|i| step.value(i))
            .collect::<Result<Vec<LiteValue>, StoreError>>()?;
        out.push(Row::Lite(LiteRow {
            columns: columns.clone(),
            values,
        }));
        // Past the limit the statement is still run to its end: an UPDATE … RETURNING
        // must finish its work.
        Ok(out.len() < limit)
    })?;
    Ok(out)
}
