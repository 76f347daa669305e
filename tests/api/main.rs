//! End-to-end tests of the HTTP API. Each test is an `async fn(TestApp)` listed in its module's
//! `backend_tests!`, which runs it once on SQLite and once on PostgreSQL. The PostgreSQL ones
//! are `#[ignore]`d, so that a run without a server reports them as ignored rather than as
//! passes; `cargo test -p sticky-calls-tests -- --ignored` with `STICKY_TEST_POSTGRES_URL` set
//! runs them (and fails, saying why, without it).

/// Generates a SQLite and a PostgreSQL `#[tokio::test]` for each listed test function.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(sticky_calls_tests::spawn_app(sticky_calls_tests::Backend::Sqlite).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "PostgreSQL: STICKY_TEST_POSTGRES_URL=postgres://... cargo test -p sticky-calls-tests -- --ignored"]
                async fn $name() {
                    super::$name(sticky_calls_tests::spawn_app(sticky_calls_tests::Backend::Postgres).await).await;
                }
            )*
        }
    };
}

/// Generates a PostgreSQL `#[tokio::test]` (ignored like the others) for each listed test
/// function: for what only PostgreSQL serves, several processes on one database.
macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "PostgreSQL: STICKY_TEST_POSTGRES_URL=postgres://... cargo test -p sticky-calls-tests -- --ignored"]
                async fn $name() {
                    super::$name(sticky_calls_tests::spawn_app(sticky_calls_tests::Backend::Postgres).await).await;
                }
            )*
        }
    };
}

mod agent;
mod audit;
mod bad_input;
mod billing;
mod calls;
mod connectors;
mod contexts;
mod customers;
mod identity;
mod import;
mod isolation;
mod keys;
mod plans;
mod platforms;
mod races;
mod scale_out;
mod system;
mod tenant_waits;
