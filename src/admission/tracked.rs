//! The tracked query methods of [`GuardedConn`](super::GuardedConn) and
//! [`GuardedTransaction`](super::GuardedTransaction), written once.

/// Expands, inside an `impl`, to `query`, `query_one`, `query_opt`, `execute`,
/// `batch_execute` and `simple_query`, each run through `self.$tracker()` on
/// `self.$client()`. The caller's module imports `Error`, `Row`, `SimpleQueryMessage`,
/// `ToSql` and `ToStatement`.
macro_rules! tracked_queries {
    ($tracker:ident, $client:ident) => {
        /// Runs a statement and returns its rows (tracked).
        pub async fn query<T>(
            &self,
            statement: &T,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<Row>, Error>
        where
            T: ?Sized + ToStatement,
        {
            self.$tracker()
                .run(|| self.$client().query(statement, params))
                .await
        }

        /// Runs a statement that returns exactly one row (tracked).
        pub async fn query_one<T>(
            &self,
            statement: &T,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Row, Error>
        where
            T: ?Sized + ToStatement,
        {
            self.$tracker()
                .run(|| self.$client().query_one(statement, params))
                .await
        }

        /// Runs a statement that returns at most one row (tracked).
        pub async fn query_opt<T>(
            &self,
            statement: &T,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<Row>, Error>
        where
            T: ?Sized + ToStatement,
        {
            self.$tracker()
                .run(|| self.$client().query_opt(statement, params))
                .await
        }

        /// Runs a statement and returns the number of rows it touched (tracked).
        pub async fn execute<T>(
            &self,
            statement: &T,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<u64, Error>
        where
            T: ?Sized + ToStatement,
        {
            self.$tracker()
                .run(|| self.$client().execute(statement, params))
                .await
        }

        /// Runs one or more statements without parameters (tracked).
        pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
            self.$tracker()
                .run(|| self.$client().batch_execute(sql))
                .await
        }

        /// Runs statements with the simple query protocol (tracked).
        pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
            self.$tracker()
                .run(|| self.$client().simple_query(sql))
                .await
        }
    };
}

pub(crate) use tracked_queries;
