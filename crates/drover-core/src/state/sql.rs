//! The one file that names both database drivers: a connection to SQLite or
//! PostgreSQL behind one small API shaped like rusqlite's, so the noun
//! modules' statements (written in the SQL both take) run unchanged on
//! either. Values pass through our own [`Value`] (NULL, a 64-bit integer or
//! text: the only kinds the schema stores), so neither driver's type rules
//! leak into the noun modules.
//!
//! On PostgreSQL, `?N` placeholders become `$N` and bare `?` become `$k` in
//! order; each statement is prepared once per connection and cached.

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};

/// A value as stored: the schema has no REAL or BLOB columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    /// A value of another kind (a SQLite REAL or BLOB a hand edit left):
    /// read back as nothing but itself.
    Other(&'static str),
}

/// Which SQL a connection speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// What went wrong in a statement, before [`super::db_error`] names the
/// database.
#[derive(Debug)]
pub(crate) enum SqlError {
    Sqlite(rusqlite::Error),
    /// With the database it came from (its URL without a password), once
    /// the connection has named it.
    Postgres(postgres::Error, Option<String>),
    /// `query_row` found no row.
    NoRows,
    /// The PostgreSQL connection was lost inside a transaction: nothing of
    /// it was committed, and nothing more may run in it.
    Lost,
    /// A column's value is not what the row function expects.
    Column {
        col: usize,
        reason: String,
    },
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlError::Sqlite(e) => e.fmt(f),
            SqlError::Postgres(e, db) => {
                if let Some(db) = db {
                    write!(f, "{db}: ")?;
                }
                match e.as_db_error() {
                    Some(d) => return write!(f, "{}: {}", d.severity(), d.message()),
                    None if e.is_closed() => {
                        write!(f, "the connection to PostgreSQL was lost: {e}")?
                    }
                    None => write!(f, "PostgreSQL: {e}")?,
                }
                // Why it could not connect (refused, no such socket), which
                // the driver's own message leaves to its source.
                match std::error::Error::source(e) {
                    Some(cause) => write!(f, ": {cause}"),
                    None => Ok(()),
                }
            }
            SqlError::NoRows => f.write_str("query returned no rows"),
            SqlError::Lost => f.write_str(
                "the connection to PostgreSQL was lost during a transaction; nothing of it was committed",
            ),
            SqlError::Column { col, reason } => write!(f, "column {col}: {reason}"),
        }
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SqlError::Sqlite(e) => Some(e),
            SqlError::Postgres(e, _) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => SqlError::NoRows,
            e => SqlError::Sqlite(e),
        }
    }
}

impl From<postgres::Error> for SqlError {
    fn from(e: postgres::Error) -> Self {
        SqlError::Postgres(e, None)
    }
}

impl SqlError {
    /// A column that cannot be decoded as what the row needs.
    pub(crate) fn column(col: usize, reason: impl std::fmt::Display) -> Self {
        SqlError::Column {
            col,
            reason: reason.to_string(),
        }
    }
}

pub(crate) type Result<T, E = SqlError> = std::result::Result<T, E>;

/// `.optional()` on a one-row query: no row is `None`, not an error.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(SqlError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A Rust value a statement can take as a parameter.
pub(crate) trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_value!(i64, i32, i16, u32, u16, u8);
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        // Nothing stored comes near 2^63; a value past it is a bug upstream,
        // saturating keeps it visible instead of wrapping negative.
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for crate::digest::Digest {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

/// A Rust value a column can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

impl FromValue for Value {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            Value::Int(_) => Err("an integer where text was expected".into()),
            Value::Null => Err("NULL where text was expected".into()),
            Value::Other(what) => Err(format!("{what} where text was expected")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            Value::Text(_) => Err("text where an integer was expected".into()),
            Value::Null => Err("NULL where an integer was expected".into()),
            Value::Other(what) => Err(format!("{what} where an integer was expected")),
        }
    }
}
macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> std::result::Result<Self, String> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
int_from_value!(i32, i16, u64, u32, u16, u8, usize);

/// Digests are stored as their `sha256:<hex>` text; a malformed one reads
/// back as an error naming the column, never as a wrong digest.
impl FromValue for crate::digest::Digest {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        String::from_value(v)?.parse().map_err(|e| format!("{e}"))
    }
}

/// One row of a result.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    cols: Vec<Value>,
}

/// A column index (only positions: every statement selects its columns in
/// a known order).
pub(crate) trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl Row {
    pub(crate) fn get<I: RowIndex, T: FromValue>(&self, i: I) -> Result<T> {
        let i = i.index();
        let v = self
            .cols
            .get(i)
            .ok_or_else(|| SqlError::column(i, "no such column"))?;
        T::from_value(v).map_err(|reason| SqlError::Column { col: i, reason })
    }

    fn from_sqlite(r: &rusqlite::Row<'_>) -> Result<Row> {
        use rusqlite::types::ValueRef;
        let n = r.as_ref().column_count();
        let mut cols = Vec::with_capacity(n);
        for i in 0..n {
            cols.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Real(_) => Value::Other("a real number"),
                ValueRef::Blob(_) => Value::Other("a blob"),
            });
        }
        Ok(Row { cols })
    }

    fn from_postgres(r: &postgres::Row) -> Result<Row> {
        let mut cols = Vec::with_capacity(r.len());
        for (i, c) in r.columns().iter().enumerate() {
            let ty = c.type_();
            let v = if *ty == Type::INT8 {
                r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
            } else if *ty == Type::INT4 {
                r.try_get::<_, Option<i32>>(i)?
                    .map(|v| Value::Int(v.into()))
            } else if *ty == Type::INT2 {
                r.try_get::<_, Option<i16>>(i)?
                    .map(|v| Value::Int(v.into()))
            } else if *ty == Type::BOOL {
                r.try_get::<_, Option<bool>>(i)?
                    .map(|v| Value::Int(v.into()))
            } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            } else {
                return Err(SqlError::column(
                    i,
                    format!("PostgreSQL type {ty} is not one drover stores"),
                ));
            };
            cols.push(v.unwrap_or(Value::Null));
        }
        Ok(Row { cols })
    }
}

/// A statement's parameters: `params![a, b]`, `[x]`, `()` or
/// [`params_from_iter`].
pub(crate) trait Params {
    fn values(self) -> Vec<Value>;
}
impl Params for () {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for &[&dyn ToValue] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}

/// Parameters from an iterator (`IN (?, ?, …)`).
pub(crate) fn params_from_iter<T: ToValue>(it: impl IntoIterator<Item = T>) -> Vec<Value> {
    it.into_iter().map(|v| v.to_value()).collect()
}

/// `params![a, b, …]`: parameters of mixed types.
macro_rules! params {
    () => { () };
    ($($e:expr),+ $(,)?) => {
        &[$(&$e as &dyn $crate::state::sql::ToValue),+][..]
    };
}
pub(crate) use params;

/// A PostgreSQL connection and its prepared statements. The client is
/// made again on the next use after it was parked ([`Conn::park`]) or
/// lost (the server restarted), except inside a transaction, which a new
/// connection would not continue.
pub(crate) struct Pg {
    client: Option<postgres::Client>,
    /// How to connect again.
    config: postgres::Config,
    /// The database, for errors: `postgres://user@host:port/db`.
    label: String,
    stmts: HashMap<String, postgres::Statement>,
    in_tx: bool,
}

/// An open connection to either database.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

impl Conn {
    pub(crate) fn postgres(
        client: postgres::Client,
        config: postgres::Config,
        label: String,
    ) -> Conn {
        Conn::Postgres(Box::new(RefCell::new(Pg {
            client: Some(client),
            config,
            label,
            stmts: HashMap::new(),
            in_tx: false,
        })))
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (backup, tests that
    /// edit the file).
    pub(crate) fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    /// The PostgreSQL database's label (its URL without a password).
    pub(crate) fn pg_label(&self) -> Option<String> {
        match self {
            Conn::Sqlite(_) => None,
            Conn::Postgres(pg) => Some(pg.borrow().label.clone()),
        }
    }

    /// Whether a PostgreSQL connection is open now (`false` when parked).
    #[cfg(test)]
    pub(crate) fn connected(&self) -> bool {
        match self {
            Conn::Sqlite(_) => true,
            Conn::Postgres(pg) => pg.borrow().client.is_some(),
        }
    }

    /// Close the PostgreSQL connection until the next use (outside a
    /// transaction; SQLite's file stays open).
    pub(crate) fn park(&self) {
        if let Conn::Postgres(pg) = self {
            let mut pg = pg.borrow_mut();
            if !pg.in_tx {
                pg.drop_client();
            }
        }
    }

    /// Name the database in a PostgreSQL error; forget a connection that
    /// closed, so the next use makes a new one.
    fn named<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err()
            && let Conn::Postgres(pg) = self
        {
            let mut pg = pg.borrow_mut();
            if pg.client.as_ref().is_some_and(postgres::Client::is_closed) {
                pg.drop_client();
            }
        }
        match (r, self) {
            (Err(SqlError::Postgres(e, None)), Conn::Postgres(pg)) => {
                Err(SqlError::Postgres(e, Some(pg.borrow().label.clone())))
            }
            (r, _) => r,
        }
    }

    /// Run `sql` (one or more statements, no parameters).
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        self.named(self.execute_batch_(sql))
    }

    fn execute_batch_(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.client()?.batch_execute(sql)?;
                Ok(())
            }
        }
    }

    /// Run one statement; the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.named(self.execute_(sql, params.values()))
    }

    fn execute_(&self, sql: &str, values: Vec<Value>) -> Result<usize> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(lite)))?)
            }
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let stmt = pg.prepare(sql)?;
                let binds = binds(&values, stmt.params());
                let n = pg.client()?.execute(&stmt, &refs(&binds))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// The first row of a query, through `f`; [`SqlError::NoRows`] if none.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        let mut stmt = self.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        match rows.next()? {
            Some(r) => f(r),
            None => Err(SqlError::NoRows),
        }
    }

    pub(crate) fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(match self {
            Conn::Sqlite(c) => Statement::Sqlite(c.prepare_cached(sql)?),
            Conn::Postgres(_) => Statement::Postgres {
                conn: self,
                sql: sql.to_string(),
            },
        })
    }

    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare(sql)
    }

    /// Whether no transaction is open on this connection.
    pub(crate) fn is_autocommit(&self) -> bool {
        match self {
            Conn::Sqlite(c) => c.is_autocommit(),
            Conn::Postgres(pg) => !pg.borrow().in_tx,
        }
    }

    /// Begin a transaction with `begin` (dialect-specific text); the
    /// connection remembers it is in one.
    pub(crate) fn begin(&self, begin: &str) -> Result<()> {
        self.named(self.begin_(begin))
    }

    fn begin_(&self, begin: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(begin)?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let client = pg.client()?;
                // BEGIN may succeed and a later statement of the prologue
                // (the write lock) fail: leave no aborted transaction open.
                if let Err(e) = client.batch_execute(begin) {
                    let _ = client.batch_execute("ROLLBACK");
                    return Err(e.into());
                }
                pg.in_tx = true;
                Ok(())
            }
        }
    }

    /// End the transaction with `COMMIT` or `ROLLBACK`.
    pub(crate) fn end(&self, how: &str) -> Result<()> {
        if let Conn::Postgres(pg) = self {
            let mut pg = pg.borrow_mut();
            pg.in_tx = false;
            // Lost with its connection: a ROLLBACK has nothing left to do,
            // and a COMMIT must not run on a new connection, where it would
            // "succeed" with nothing.
            if pg.client.is_none() {
                return match how {
                    "ROLLBACK" => Ok(()),
                    _ => Err(SqlError::Lost),
                };
            }
        }
        self.execute_batch(how)
    }

    /// A read-only snapshot: every read until it is dropped sees one
    /// committed state.
    pub(crate) fn snapshot(&self) -> Result<Snapshot<'_>> {
        self.begin(match self.dialect() {
            Dialect::Sqlite => "BEGIN DEFERRED",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })?;
        Ok(Snapshot(self))
    }
}

/// An open read snapshot ([`Conn::snapshot`]); rolled back when dropped.
pub(crate) struct Snapshot<'a>(&'a Conn);

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let _ = self.0.end("ROLLBACK");
    }
}

impl Pg {
    /// The connection, made again if it was parked or lost; never inside a
    /// transaction (whose connection is gone with it).
    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.is_none() {
            if self.in_tx {
                return Err(SqlError::Lost);
            }
            self.client = Some(self.config.connect(postgres::NoTls)?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// Close the connection; its prepared statements go with it.
    fn drop_client(&mut self) {
        self.client = None;
        self.stmts.clear();
    }

    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client()?.prepare(&placeholders(sql))?;
        self.stmts.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

/// A prepared statement.
pub(crate) enum Statement<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres { conn: &'c Conn, sql: String },
}

impl Statement<'_> {
    /// Run the query; its rows, one at a time.
    pub(crate) fn query(&mut self, params: impl Params) -> Result<Rows<'_>> {
        let values = params.values();
        if let Statement::Postgres { conn, .. } = self {
            let conn: &Conn = conn;
            let r = self.query_(values);
            return conn.named(r);
        }
        self.query_(values)
    }

    fn query_(&mut self, values: Vec<Value>) -> Result<Rows<'_>> {
        match self {
            Statement::Sqlite(s) => Ok(Rows::Sqlite {
                rows: s.query(rusqlite::params_from_iter(values.iter().map(lite)))?,
                current: None,
            }),
            Statement::Postgres { conn, sql } => {
                let Conn::Postgres(pg) = conn else {
                    unreachable!("a PostgreSQL statement on a SQLite connection")
                };
                let mut pg = pg.borrow_mut();
                let stmt = pg.prepare(sql)?;
                let binds = binds(&values, stmt.params());
                let rows = pg.client()?.query(&stmt, &refs(&binds))?;
                Ok(Rows::Memory {
                    rows: rows.into_iter(),
                    current: None,
                })
            }
        }
    }

    /// Every row of the query, through `f`.
    pub(crate) fn query_map<T, F: FnMut(&Row) -> Result<T>>(
        &mut self,
        params: impl Params,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(params)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(f(r));
        }
        Ok(out.into_iter())
    }
}

/// Rows of a query: SQLite's are read as they are stepped through,
/// PostgreSQL's arrive whole.
pub(crate) enum Rows<'s> {
    Sqlite {
        rows: rusqlite::Rows<'s>,
        current: Option<Row>,
    },
    Memory {
        rows: std::vec::IntoIter<postgres::Row>,
        current: Option<Row>,
    },
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Result<Option<&Row>> {
        match self {
            Rows::Sqlite { rows, current } => {
                *current = match rows.next()? {
                    Some(r) => Some(Row::from_sqlite(r)?),
                    None => None,
                };
                Ok(current.as_ref())
            }
            Rows::Memory { rows, current } => {
                *current = match rows.next() {
                    Some(r) => Some(Row::from_postgres(&r)?),
                    None => None,
                };
                Ok(current.as_ref())
            }
        }
    }
}

fn lite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null | Value::Other(_) => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

/// A value bound to a PostgreSQL parameter of the type the server inferred.
#[derive(Debug)]
struct Bind<'a>(&'a Value);

fn binds<'a>(values: &'a [Value], _types: &[Type]) -> Vec<Bind<'a>> {
    values.iter().map(Bind).collect()
}

fn refs<'a>(binds: &'a [Bind<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect()
}

impl ToSql for Bind<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Value::Null | Value::Other(_) => Ok(IsNull::Yes),
            Value::Int(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*i != 0).to_sql(ty, out)
                } else {
                    i.to_string().as_str().to_sql(ty, out)
                }
            }
            Value::Text(s) => {
                if *ty == Type::INT8 {
                    s.parse::<i64>()?.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    s.parse::<i32>()?.to_sql(ty, out)
                } else {
                    s.as_str().to_sql(ty, out)
                }
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// `?N` → `$N`, and bare `?` → `$k` in order, outside quotes.
pub(crate) fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    next += 1;
                    out.push_str(&next.to_string());
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            placeholders("SELECT ?1, ?12, '?', \"a?\" WHERE x = ? AND y IN (?, ?)"),
            "SELECT $1, $12, '?', \"a?\" WHERE x = $1 AND y IN ($2, $3)"
        );
    }
}
