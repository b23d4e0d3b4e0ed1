//! `scripts/migrate`: applies the embedded migrations to `DATABASE_URL`.

use everjust_core::db::migrate::{apply, MIGRATIONS};
use everjust_core::ports::postgres::PgSql;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("migrate: DATABASE_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/everjust_dev)");
        std::process::exit(2);
    };
    let (client, connection) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("migrate: cannot connect to DATABASE_URL: {e}");
            std::process::exit(1);
        }
    };
    let conn = tokio::spawn(connection);
    match apply(&PgSql::new(client), MIGRATIONS).await {
        Ok(applied) if applied.is_empty() => {
            println!("migrate: up to date ({} migrations)", MIGRATIONS.len())
        }
        Ok(applied) => println!("migrate: applied {}", applied.join(", ")),
        Err(e) => {
            eprintln!("migrate: {e}");
            std::process::exit(1);
        }
    }
    conn.abort();
}
