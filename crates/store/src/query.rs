//! Portable dynamic SQL: filters numbered `$1, $2, …`, which both SQLite and PostgreSQL
//! accept, and the `{items, total}` page every list returns.

use billhook_domain::entities::Wire;
use billhook_domain::Timestamp;

use crate::sql::{query, Conn, Query, Row};

use crate::StoreError;

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// What a list reads.
pub struct Listing<'a> {
    pub columns: &'a str,
    pub table: &'a str,
    /// Where its rows are counted: `table`, or a table that holds one row for each of
    /// its rows under every filter (the base table of a view that only joins names in),
    /// so that the count skips the joins.
    pub count_from: &'a str,
    pub order: &'a str,
}

/// A `WHERE` clause under construction.
#[derive(Debug, Default)]
pub struct Filter {
    clauses: Vec<String>,
    binds: Vec<Bind>,
}

impl Filter {
    /// Adds `clause`, where each `?` stands for the next of `binds`.
    pub fn add(&mut self, clause: &str, binds: Vec<Bind>) -> &mut Self {
        let mut sql = String::new();
        let mut next = binds.into_iter();
        for ch in clause.chars() {
            if ch == '?' {
                self.binds.push(next.next().expect("one bind per '?'"));
                sql.push_str(&format!("${}", self.binds.len()));
            } else {
                sql.push(ch);
            }
        }
        self.clauses.push(sql);
        self
    }

    /// Adds `column = value` when `value` is given.
    pub fn eq_text(&mut self, column: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.add(&format!("{column} = ?"), vec![Bind::Text(v.to_string())]);
        }
        self
    }

    /// Adds `column = value` when `value` is given.
    pub fn eq_int(&mut self, column: &str, value: Option<i64>) -> &mut Self {
        if let Some(v) = value {
            self.add(&format!("{column} = ?"), vec![Bind::Int(v)]);
        }
        self
    }

    /// Adds `column = 'word'` when `value` is given, the word written into the
    /// statement: it is one of the type's fixed words, and a partial index (`… WHERE
    /// status = 'failed'`) serves only a query whose text says the same, which a bound
    /// value does not.
    pub fn eq_word<W: Wire>(&mut self, column: &str, value: Option<W>) -> &mut Self {
        match value {
            Some(word) => self.add(&format!("{column} = '{}'", word.as_str()), Vec::new()),
            None => self,
        }
    }

    /// Adds `from <= column <= to`, each bound when given.
    pub fn within(
        &mut self,
        column: &str,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> &mut Self {
        if let Some(from) = from {
            self.add(&format!("{column} >= ?"), vec![Bind::Int(from.micros())]);
        }
        if let Some(to) = to {
            self.add(&format!("{column} <= ?"), vec![Bind::Int(to.micros())]);
        }
        self
    }

    fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn bind(&self, mut q: Query) -> Query {
        for b in &self.binds {
            q = match b {
                Bind::Int(i) => q.bind(*i),
                Bind::Text(t) => q.bind(t.as_str()),
            };
        }
        q
    }

    /// Runs `SELECT {columns} FROM {table} WHERE … ORDER BY {order} LIMIT … OFFSET …`
    /// and the matching count.
    pub async fn page(
        &self,
        conn: &mut Conn,
        columns: &str,
        table: &str,
        order: &str,
        page: Page,
    ) -> Result<(Vec<Row>, i64), StoreError> {
        let listing = Listing {
            columns,
            table,
            count_from: table,
            order,
        };
        self.list(conn, &listing, page).await
    }

    /// A page of `listing` and the matching count.
    pub async fn list(
        &self,
        conn: &mut Conn,
        listing: &Listing<'_>,
        page: Page,
    ) -> Result<(Vec<Row>, i64), StoreError> {
        let (count_sql, sql) = self.sql(listing);
        let total: i64 = self
            .bind(query(&count_sql))
            .fetch_one(&mut *conn)
            .await?
            .try_get(0usize)?;
        let rows = self
            .bind(query(&sql))
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&mut *conn)
            .await?;
        Ok((rows, total))
    }

    /// The count's statement and the page's.
    fn sql(&self, l: &Listing) -> (String, String) {
        let where_sql = self.where_sql();
        // Bound, not written into the text: every page would be a statement of its own
        // (PostgreSQL prepares each; SQLite keeps each rewritten, see `sql::lite_sql`).
        let n = self.binds.len();
        (
            format!("SELECT COUNT(*) FROM {}{where_sql}", l.count_from),
            format!(
                "SELECT {} FROM {}{where_sql} ORDER BY {} LIMIT ${} OFFSET ${}",
                l.columns,
                l.table,
                l.order,
                n + 1,
                n + 2
            ),
        )
    }

    /// The plans of [`Filter::list`]'s count and page, a line per step
    /// (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL): for tests that a list
    /// reads its page in order from an index.
    pub async fn explain(
        &self,
        conn: &mut Conn,
        dialect: crate::Dialect,
        listing: &Listing<'_>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let (count_sql, sql) = self.sql(listing);
        let (prefix, detail) = match dialect {
            crate::Dialect::Sqlite => ("EXPLAIN QUERY PLAN ", 3usize),
            crate::Dialect::Postgres => ("EXPLAIN ", 0),
        };
        let mut plans = Vec::new();
        for (sql, paged) in [(count_sql, false), (sql, true)] {
            let mut q = self.bind(query(&format!("{prefix}{sql}")));
            if paged {
                q = q.bind(50i64).bind(0i64);
            }
            let rows = q.fetch_all(&mut *conn).await?;
            plans.push(
                rows.iter()
                    .map(|r| r.try_get::<String, _>(detail))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let page = plans.pop().unwrap_or_default();
        Ok((plans.pop().unwrap_or_default(), page))
    }
}

/// `limit` and `offset` of a list request, already bounded.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 50,
            offset: 0,
        }
    }
}

/// Escapes `%`, `_` and `\` so user text matches literally inside `LIKE … ESCAPE '\'`.
pub fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

/// Decodes a JSON text column.
pub fn json_column<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("JSON column: {e}")))
}

/// Encodes a value for a JSON text column.
pub fn to_json_text<T: serde::Serialize>(value: &T) -> String {
    // Serialising our own plain types cannot fail: no maps with non-string keys.
    serde_json::to_string(value).expect("serialisable")
}

/// `column IN (…)` over ids bound as one JSON array in `$param`: the statement's text is
/// the same whatever the list, so it is prepared once (a list written into the SQL made
/// every batch a new statement to parse). Bind the list with [`ids_json`].
///
/// On PostgreSQL the list is an array computed once (`= ANY (ARRAY(…))`), which the
/// planner looks up through the column's index. As `IN (SELECT …)` it planned a hash
/// semi-join, reading the whole table for every batch while the table was small enough
/// for that to look cheap: tens of thousands of rows per batch of outcomes in the bench.
pub fn in_ids(conn: &crate::Conn, column: &str, param: usize) -> String {
    if conn.is_sqlite() {
        format!("{column} IN (SELECT value FROM json_each(${param}))")
    } else {
        format!("{column} = ANY (ARRAY(SELECT jsonb_array_elements_text(${param}::jsonb)::bigint))")
    }
}

/// `(id, lease_until) IN (…)` over leases bound as one JSON array of pairs in
/// `$param` (see [`in_ids`]); bind them with [`leases_json`]. On PostgreSQL the ids are
/// also given as an array, for the index (see [`in_ids`]); the pairs then only filter.
pub fn in_leases(conn: &crate::Conn, param: usize) -> String {
    if conn.is_sqlite() {
        format!(
            "(id, lease_until) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
             FROM json_each(${param}))"
        )
    } else {
        format!(
            "id = ANY (ARRAY(SELECT (e->>0)::bigint FROM jsonb_array_elements(${param}::jsonb) e))
             AND (id, lease_until) IN (SELECT (e->>0)::bigint, (e->>1)::bigint
             FROM jsonb_array_elements(${param}::jsonb) e)"
        )
    }
}

/// The JSON array for [`in_leases`].
pub fn leases_json(leases: &[crate::deliveries::Lease]) -> String {
    let pairs: Vec<[i64; 2]> = leases.iter().map(|l| [l.id, l.until.micros()]).collect();
    serde_json::to_string(&pairs).expect("integers serialise")
}

/// The JSON array for [`in_ids`].
pub fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("integers serialise")
}
