//! End-to-end tests of the HTTP API. Each test is an `async fn(TestApp)` listed in its module's
//! `backend_tests!`, which runs it once on SQLite and once on PostgreSQL (skipped, saying so,
//! when `STICKY_TEST_POSTGRES_URL` is not set).

/// Generates a SQLite and a PostgreSQL `#[tokio::test]` for each listed test function.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = sticky_calls_tests::spawn_app(sticky_calls_tests::Backend::Sqlite).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = sticky_calls_tests::spawn_app(sticky_calls_tests::Backend::Postgres).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

mod bad_input;
mod calls;
mod connectors;
mod contexts;
mod customers;
mod import;
mod isolation;
mod keys;
mod platforms;
mod system;
