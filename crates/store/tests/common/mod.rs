//! What the store's tests share: a fresh migrated database on SQLite or PostgreSQL.
// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use billhook_store::sql::{query, Conn};
use billhook_store::{Db, Dialect};

/// A migrated database with two after handlers for every event: SQLite in a temporary
/// directory or, with `BILLHOOK_TEST_DATABASE_URL`, a PostgreSQL database of its own.
pub struct Fresh {
    pub db: Db,
    _dir: tempfile::TempDir,
    /// PostgreSQL: the server's admin connection and the database to drop.
    pg: Option<(Db, String)>,
    /// PostgreSQL: the admin URL, for a test that panics before [`Fresh::drop_database`].
    admin_url: Option<String>,
    /// The database's URL.
    pub url: String,
}

impl Drop for Fresh {
    /// A test that failed before [`Fresh::drop_database`] drops its database here, on a
    /// thread and runtime of its own (a drop cannot wait, and the test's runtime may be
    /// going), instead of leaving it on the server.
    fn drop(&mut self) {
        let (Some((_, name)), Some(url)) = (self.pg.take(), self.admin_url.take()) else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                if let Ok(admin) = Db::connect(&url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = admin.execute_admin(&drop).await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

impl Fresh {
    pub async fn new() -> Fresh {
        let fresh = Fresh::unmigrated().await;
        let db = &fresh.db;
        db.migrate().await.unwrap();
        for name in ["one", "two"] {
            query(
                "INSERT INTO handlers (name, status, priority, event, stage, type, task,
                   timeout_ms, on_failure, retry_schedule, secret, created_at, updated_at)
                 VALUES ($1, 'enabled', 0, '*', 'after', 'http', 'http://127.0.0.1:9/', 1000,
                   'continue', '[]', 's', 0, 0)",
            )
            .bind(name.to_string())
            .execute(&mut db.write.acquire().await.unwrap())
            .await
            .unwrap();
        }
        fresh
    }

    /// A database no migration has run on, for a test of one.
    pub async fn unmigrated() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match std::env::var("BILLHOOK_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("billhook_heads_{}", uuid::Uuid::now_v7().simple());
                let admin = Db::connect(&admin_url).await.unwrap();
                admin
                    .execute_admin(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                let base = admin_url.rsplit_once('/').unwrap().0;
                (format!("{base}/{name}"), Some((admin, name, admin_url)))
            }
            _ => (
                format!("sqlite:{}", dir.path().join("q.db").display()),
                None,
            ),
        };
        let db = Db::connect(&url).await.unwrap();
        let (pg, admin_url) = match pg {
            Some((admin, name, url)) => (Some((admin, name)), Some(url)),
            None => (None, None),
        };
        Fresh {
            db,
            _dir: dir,
            pg,
            admin_url,
            url,
        }
    }

    /// A fresh PostgreSQL database; on SQLite, none, saying loudly why the test does
    /// not run (SQLite has one writer: `why`).
    pub async fn postgres_only(why: &str) -> Option<Fresh> {
        let fresh = Fresh::new().await;
        if fresh.db.dialect == Dialect::Postgres {
            return Some(fresh);
        }
        // Straight to the terminal: the test harness keeps what `eprintln!` writes from a
        // passing test to itself, and a test that does not run must say so.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "NOT RUN on SQLite (one writer: {why}); \
             set BILLHOOK_TEST_DATABASE_URL to run it on PostgreSQL"
        );
        fresh.drop_database().await;
        None
    }

    pub async fn drop_database(mut self) {
        self.db.close().await;
        if let Some((admin, name)) = self.pg.take() {
            admin
                .execute_admin(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await
                .unwrap();
            admin.close().await;
        }
    }
}

/// The first column of the first row of `sql`, an integer.
pub async fn scalar(conn: &mut Conn, sql: &str) -> i64 {
    query(sql)
        .fetch_one(conn)
        .await
        .unwrap()
        .try_get(0usize)
        .unwrap()
}
