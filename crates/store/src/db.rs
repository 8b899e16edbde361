use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::Executor;

use crate::sql::{query, Conn, LitePool, Pool, Tx};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A group commit failed; every transaction of the group is undone.
    #[error("database: commit failed: {0}")]
    Commit(String),
    /// A transaction begun with [`Db::begin_undoable`] was undone, with its group
    /// commit, by another member's failure: nothing of it was written; run it again.
    #[error("database: undone with its group commit; to be run again")]
    Undone,
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when a statement gave up waiting for a lock (PostgreSQL's `lock_timeout`).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, StoreError::Sqlx(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("55P03"))
    }

    /// True when a unique index refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlx(sqlx::Error::Database(e)) => e.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

/// Undoable tries of a transaction before one that nothing else can undo (see
/// [`Db::begin_attempt`]).
pub const UNDOABLE_ATTEMPTS: usize = 3;

/// Which database is behind the pools; the few statements that differ ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The database: a pool for reads and a pool for write transactions.
///
/// SQLite allows one writer at a time; a single writer connection queues writers in
/// process (fair, no busy loops) while WAL lets readers go on. PostgreSQL uses one pool
/// for both and row locks for ordering.
#[derive(Clone)]
pub struct Db {
    pub read: Pool,
    pub write: Pool,
    pub dialect: Dialect,
    url: String,
    /// PostgreSQL: asks the announcer task for a `NOTIFY` (see [`Db::announce_deliveries`]).
    announce: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Where this process's short write transactions hand fresh deliveries over.
    handoffs: crate::handoff::Handoffs,
    /// PostgreSQL: deliveries this process queued behind others, for its engine.
    head_checks: crate::head_checks::HeadChecks,
    /// SQLite: where the work holding the writer runs (see [`Db::on_writer`]).
    writer_thread: Option<crate::writer_thread::WriterThread>,
}

static MIGRATE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MIGRATE_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects to `url` (`sqlite:…` or `postgres://…`); a SQLite file is created when
    /// missing.
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        match dialect {
            Dialect::Postgres => {
                let options = AnyConnectOptions::from_str(url)?;
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await?;
                crate::clock::follow_database_clock(pool.clone()).await?;
                Ok(Db {
                    read: Pool::Any(pool.clone()),
                    write: Pool::Any(pool.clone()),
                    dialect,
                    url: url.to_string(),
                    announce: Some(start_announcer(pool)),
                    handoffs: Default::default(),
                    head_checks: Default::default(),
                    writer_thread: None,
                })
            }
            Dialect::Sqlite => {
                crate::sqlite_config::configure_sqlite();
                let path = sqlite_path(url);
                // NORMAL with WAL is durable against a killed process (the WAL is in the
                // OS), and only risks the last commits on power loss: the speed/safety
                // trade the embedded default makes.
                let setup = "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
                             PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; \
                             PRAGMA temp_store=MEMORY;";
                // WAL is a property of the file: the writer sets it before readers open.
                let write = LitePool::open_writer(&path, setup)?;
                let read = LitePool::open(&path, 8, setup)?;
                Ok(Db {
                    read: Pool::Lite(read),
                    write: Pool::Lite(write),
                    dialect,
                    url: sqlite_url(url),
                    announce: None,
                    handoffs: Default::default(),
                    head_checks: Default::default(),
                    writer_thread: Some(crate::writer_thread::WriterThread::start()?),
                })
            }
        }
    }

    /// Applies the migrations of this database that have not run yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match (&self.write, self.dialect) {
            (Pool::Any(pool), _) => MIGRATE_POSTGRES.run(pool).await?,
            (Pool::Lite(_), _) => {
                // Migrations run through sqlx's migrator on a connection of their own.
                let options = AnyConnectOptions::from_str(&self.url)?;
                let pool = sqlite_pool(1).connect_with(options).await?;
                let result = MIGRATE_SQLITE.run(&pool).await;
                pool.close().await;
                result?;
            }
        }
        Ok(())
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.offered(self.write.begin().await?))
    }

    /// Lets a short transaction hand its deliveries over and pass those it queued behind
    /// others to the engine.
    fn offered(&self, mut tx: Tx) -> Tx {
        tx.offer_handoffs(self.handoffs.clone());
        tx.offer_head_checks(self.head_checks.clone());
        tx
    }

    /// Starts a write transaction that may be undone with the others of its SQLite group
    /// commit when one of them fails: its commit then returns [`StoreError::Undone`],
    /// and the caller runs the whole transaction again (a transaction begun with
    /// [`Db::begin`] is never undone by another's failure). In exchange it needs no
    /// savepoint of its own, which copies every page it changes.
    pub async fn begin_undoable(&self) -> Result<Tx, StoreError> {
        Ok(self.offered(self.write.begin_undoable().await?))
    }

    /// Try `attempt` (from 0) of a transaction run again whenever its commit returns
    /// [`StoreError::Undone`]: the first [`UNDOABLE_ATTEMPTS`] are undoable (see
    /// [`Db::begin_undoable`]), the next one is begun with [`Db::begin`], which nothing
    /// else undoes, so the runs end there at the latest.
    pub async fn begin_attempt(&self, attempt: usize) -> Result<Tx, StoreError> {
        match attempt < UNDOABLE_ATTEMPTS {
            true => self.begin_undoable().await,
            false => self.begin().await,
        }
    }

    /// Runs `work`, short write transactions, where they run fastest: on SQLite, on the
    /// writer thread (see [`crate::writer_thread`]), which runs them to the end even if
    /// the caller stops waiting; on PostgreSQL, in the caller's task.
    pub async fn on_writer<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.writer_thread {
            Some(thread) => {
                let coming = match &self.write {
                    Pool::Lite(pool) => pool.group().map(|g| g.coming()),
                    Pool::Any(_) => None,
                };
                let work = async move {
                    drop(coming);
                    work.await
                };
                crate::writer_thread::joined(thread.run(work)).await
            }
            None => Ok(work.await),
        }
    }

    /// Spawns a task that writes for as long as it runs (the delivery engine's outcome
    /// writer): on SQLite on the writer thread, on PostgreSQL on the caller's runtime.
    pub fn spawn_writer<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        match &self.writer_thread {
            Some(thread) => thread.spawn(work),
            None => tokio::spawn(work),
        }
    }

    /// The deliveries this process's transactions queued behind others, whose queues its
    /// engine looks at again (PostgreSQL, see [`crate::head_checks`]).
    pub fn head_checks(&self) -> &crate::head_checks::HeadChecks {
        &self.head_checks
    }

    /// For tests that arrange a group commit (who joins whom): its 2 ms age limit and
    /// the 5 ms after which a waiting member takes its group over are taken `times`
    /// times over, so that a loaded machine's slowness does not split the group they
    /// arrange. Nothing on PostgreSQL. The server never calls it.
    pub fn widen_group_window(&self, times: u32) {
        if let Pool::Lite(pool) = &self.write {
            if let Some(group) = pool.group() {
                group.widen_window(times);
            }
        }
    }

    /// How SQLite's one writer was used since the process started; none on PostgreSQL.
    pub fn writer_stats(&self) -> Option<crate::WriterStats> {
        match &self.write {
            Pool::Lite(pool) => pool.group().map(|g| g.stats()),
            Pool::Any(_) => None,
        }
    }

    /// Where this process's short write transactions hand fresh deliveries to its
    /// delivery engine (see [`crate::handoff`]).
    pub fn handoffs(&self) -> &crate::handoff::Handoffs {
        &self.handoffs
    }

    /// Starts a write transaction that will run long (an import's rows).
    pub async fn begin_long(&self) -> Result<Tx, StoreError> {
        let mut tx = self.write.begin_long().await?;
        tx.offer_head_checks(self.head_checks.clone());
        Ok(tx)
    }

    /// Tells other processes, after a commit, that deliveries were queued (PostgreSQL
    /// `NOTIFY`; SQLite processes rely on the fallback poll). Returns at once: one task
    /// sends the `NOTIFY`, outside any transaction, and announcements made while it is
    /// sending are folded into its next one. A `NOTIFY` inside every write transaction
    /// cost a round trip each and made their commits queue for PostgreSQL's one
    /// notification lock. A process that dies between a commit and its announcement
    /// leaves the other processes to their fallback poll.
    pub fn announce_deliveries(&self) {
        if let Some(announce) = &self.announce {
            announce.notify_one();
        }
    }

    /// On PostgreSQL, wakes `wake` whenever any process queues deliveries; reconnects
    /// after errors. Returns at once on SQLite.
    pub async fn listen_deliveries(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        if self.dialect != Dialect::Postgres {
            return;
        }
        loop {
            match sqlx::postgres::PgListener::connect(&self.url).await {
                Ok(mut listener) => {
                    if listener.listen("billhook_deliveries").await.is_ok() {
                        while listener.recv().await.is_ok() {
                            wake.notify_one();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN connection failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Runs one administrative statement (`CREATE DATABASE` for tools and benchmarks).
    pub async fn execute_admin(&self, sql: &str) -> Result<(), StoreError> {
        let mut conn = self.write.acquire().await?;
        query(sql).execute(&mut conn).await?;
        Ok(())
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        match self.read.acquire().await {
            Ok(mut conn) => query("SELECT 1").execute(&mut conn).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        if let Some(thread) = &self.writer_thread {
            thread.finish().await;
        }
        self.write.close().await;
        self.read.close().await;
        // The announcer sees the closed pool and ends.
        self.announce_deliveries();
    }
}

/// The task behind [`Db::announce_deliveries`]: one `NOTIFY` at a time, each covering
/// every announcement made before it started. Ends when the pool is closed.
fn start_announcer(pool: sqlx::AnyPool) -> std::sync::Arc<tokio::sync::Notify> {
    let wanted = std::sync::Arc::new(tokio::sync::Notify::new());
    let asked = wanted.clone();
    tokio::spawn(async move {
        loop {
            // Notify keeps one permit: any number of announcements while the last
            // NOTIFY was sent make one more.
            asked.notified().await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = pool
                .execute("SELECT pg_notify('billhook_deliveries', '')")
                .await
            {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "NOTIFY of queued deliveries failed");
            }
        }
    });
    wanted
}

/// The file of a SQLite URL, for rusqlite.
fn sqlite_path(url: &str) -> String {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    path.split('?').next().unwrap_or(path).to_string()
}

/// Accepts `sqlite:path`, `sqlite://path` or a bare path and asks for the file to be
/// created when missing.
fn sqlite_url(url: &str) -> String {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.contains("mode=") {
        format!("sqlite://{path}")
    } else if path.contains('?') {
        format!("sqlite://{path}&mode=rwc")
    } else {
        format!("sqlite://{path}?mode=rwc")
    }
}

fn sqlite_pool(size: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // NORMAL with WAL is durable against a killed process (the WAL is in the
                // OS), and only risks the last commits on power loss: the speed/safety
                // trade the embedded default makes.
                conn.execute(
                    "PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                )
                .await?;
                Ok(())
            })
        })
}

/// PostgreSQL: for the rest of the transaction, a statement waits at most `ms` for a
/// lock, then fails ([`StoreError::is_lock_timeout`]): for work that must give way
/// rather than hold others up while it waits.
pub(crate) async fn lock_timeout(tx: &mut Conn, ms: u32) -> Result<(), StoreError> {
    query(&format!("SET LOCAL lock_timeout = '{ms}ms'"))
        .execute(tx)
        .await?;
    Ok(())
}

/// `" FOR SHARE"` on PostgreSQL: the row cannot change until the transaction ends, but
/// others may read it so too; empty on SQLite (see [`for_update`]).
pub(crate) fn for_share(conn: &Conn) -> &'static str {
    if conn.is_postgres() {
        " FOR SHARE"
    } else {
        ""
    }
}

/// `" FOR UPDATE"` on PostgreSQL, where concurrent writers need row locks; empty on
/// SQLite, whose single writer already serialises them.
pub(crate) fn for_update(conn: &Conn) -> &'static str {
    if conn.is_postgres() {
        " FOR UPDATE"
    } else {
        ""
    }
}
