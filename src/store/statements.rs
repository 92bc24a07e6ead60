//! Write statements of one transaction sent to the database together.
//!
//! sqlx runs each SQLite query on the connection's own thread: a statement
//! costs two thread hand-offs, more than most of our statements take to
//! run; on PostgreSQL each is a round trip. Statements that return nothing
//! are joined into one query, each binding its `$N` from the query's one
//! parameter list. SQLite accepts several statements in one query.
//! PostgreSQL's protocol prepares one statement per query, so there all but
//! the last become data-modifying `WITH` clauses of the last. Those all see
//! the database as the query began, not each other's rows: the statements
//! of one item's writes never read what another of them writes (the
//! triggers they fire run at the end, and see it all).
//!
//! Only the writes of a single item (one event, say) are joined. sqlx keeps
//! each connection's prepared queries by their text, and a joined query's
//! text is the shape of the whole batch: batches of many sizes would fill
//! that cache with large programs (measured: +8 MiB peak RSS over the
//! benchmark), while one item's writes take a few shapes. A batch of many
//! items already shares each statement's hand-off between them, and its
//! queries are not kept prepared at all: their multi-row statements take a
//! shape per batch size, and a faster writer, with batches of more varied
//! sizes, filled the cache again (+2-3 MiB peak RSS on the send workload).

use sqlx::{Any, Arguments as _, Encode, Type, any::AnyArguments, error::BoxDynError};

use super::Backend;
use crate::Result;

/// Parameters of one joined query, at most: on SQLite binding grows costly
/// with the count (see [`Backend::rows_per_statement`]).
const PARAMETERS_PER_QUERY: usize = 1024;

pub struct Statements<'q> {
    backend: Backend,
    /// Whether statements are joined into one query.
    join: bool,
    /// Whether the connection keeps the queries prepared: not for a batch
    /// of many items, whose multi-row statements take a shape per batch
    /// size (see the module's comment).
    persistent: bool,
    /// Queries ready to run, in order; the last one may still grow.
    queries: Vec<Query<'q>>,
    /// The first error binding a value.
    error: Option<BoxDynError>,
}

struct Query<'q> {
    statements: Vec<String>,
    args: AnyArguments<'q>,
}

impl Query<'_> {
    fn sql(&self, backend: Backend) -> String {
        match (backend, self.statements.split_last()) {
            (Backend::Postgres, Some((last, before))) if !before.is_empty() => {
                let clauses: Vec<String> = before
                    .iter()
                    .enumerate()
                    .map(|(i, statement)| format!("w{i} AS ({statement})"))
                    .collect();
                format!("WITH {}\n{last}", clauses.join(",\n"))
            }
            _ => self.statements.join(";\n"),
        }
    }
}

/// The values of one statement, bound in the order of its parameters.
pub struct Binder<'b, 'q> {
    args: &'b mut AnyArguments<'q>,
    error: &'b mut Option<BoxDynError>,
}

impl<'q> Binder<'_, 'q> {
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        self
    }
}

impl<'q> Statements<'q> {
    /// Statements that write `items` items (see the module's comment).
    pub fn new(backend: Backend, items: usize) -> Self {
        Self {
            backend,
            join: items == 1,
            persistent: items <= 1,
            queries: Vec::new(),
            error: None,
        }
    }

    /// Adds a statement of `parameters` parameters: `sql` gets the number
    /// of its first one (`$first`, then on), `bind` binds them in order.
    /// It must not begin with `WITH`: PostgreSQL allows data-modifying
    /// `WITH` clauses only at the top of a query.
    pub fn push(
        &mut self,
        parameters: usize,
        sql: impl FnOnce(usize) -> String,
        bind: impl FnOnce(&mut Binder<'_, 'q>),
    ) {
        let joined = self.join
            && self
                .queries
                .last()
                .is_some_and(|q| q.args.len() + parameters <= PARAMETERS_PER_QUERY);
        if !joined {
            self.queries.push(Query {
                statements: Vec::new(),
                args: AnyArguments::default(),
            });
        }
        let query = self.queries.last_mut().expect("a query was just ensured");
        let first = query.args.len() + 1;
        let statement = sql(first);
        debug_assert!(!statement.trim_start().starts_with("WITH"), "{statement}");
        query.statements.push(statement);
        let mut binder = Binder {
            args: &mut query.args,
            error: &mut self.error,
        };
        bind(&mut binder);
    }

    /// Runs them in `tx`, in the order they were added.
    pub async fn execute(self, tx: &mut sqlx::Transaction<'static, Any>) -> Result<()> {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Encode(e).into());
        }
        for query in self.queries {
            let sql = query.sql(self.backend);
            sqlx::query_with(&sql, query.args)
                .persistent(self.persistent)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql_of(statements: &Statements<'_>) -> Vec<String> {
        statements
            .queries
            .iter()
            .map(|q| q.sql(statements.backend))
            .collect()
    }

    fn two_inserts(backend: Backend, items: usize) -> Statements<'static> {
        let mut statements = Statements::new(backend, items);
        for (table, values) in [("a", [1, 2]), ("b", [3, 4])] {
            statements.push(
                2,
                |first| format!("INSERT INTO {table} VALUES (${first}, ${})", first + 1),
                |b| {
                    b.bind(values[0]).bind(values[1]);
                },
            );
        }
        statements
    }

    #[test]
    fn sqlite_joins_statements_numbering_parameters_on() {
        assert_eq!(
            sql_of(&two_inserts(Backend::Sqlite, 1)),
            ["INSERT INTO a VALUES ($1, $2);\nINSERT INTO b VALUES ($3, $4)"]
        );
    }

    #[test]
    fn postgres_joins_statements_as_with_clauses_of_the_last() {
        assert_eq!(
            sql_of(&two_inserts(Backend::Postgres, 1)),
            ["WITH w0 AS (INSERT INTO a VALUES ($1, $2))\nINSERT INTO b VALUES ($3, $4)"]
        );
    }

    #[test]
    fn the_writes_of_many_items_are_not_joined() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            assert_eq!(
                sql_of(&two_inserts(backend, 2)),
                [
                    "INSERT INTO a VALUES ($1, $2)",
                    "INSERT INTO b VALUES ($1, $2)"
                ]
            );
        }
    }

    #[test]
    fn only_one_items_queries_are_kept_prepared() {
        assert!(two_inserts(Backend::Sqlite, 1).persistent);
        assert!(two_inserts(Backend::Postgres, 1).persistent);
        assert!(!two_inserts(Backend::Sqlite, 2).persistent);
        assert!(!two_inserts(Backend::Postgres, 2).persistent);
    }

    #[test]
    fn a_joined_query_has_a_bounded_parameter_count() {
        let mut statements = Statements::new(Backend::Sqlite, 1);
        for _ in 0..3 {
            statements.push(
                PARAMETERS_PER_QUERY / 2,
                |first| format!("S{first}"),
                |b| {
                    for i in 0..PARAMETERS_PER_QUERY / 2 {
                        b.bind(i as i64);
                    }
                },
            );
        }
        assert_eq!(sql_of(&statements), ["S1;\nS513", "S1"]);
    }
}
