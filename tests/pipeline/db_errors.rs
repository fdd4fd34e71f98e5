//! Every database error that reaches a user carries Postgres's own message and SQLSTATE:
//! tokio-postgres's and deadpool's Display alone say "db error".

use waitroom::store::{DbConfig, DbError};

use crate::helpers::pg_base;

#[tokio::test]
async fn a_pool_error_names_the_server_message_and_sqlstate() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let db = DbConfig::parse(&format!(
        "{}/waitroom_test_missing_{}",
        pg_base(),
        &id[..12]
    ))
    .unwrap();
    let pool = db.pool(1);
    let error = DbError::from(pool.get().await.expect_err("the database does not exist"));
    let message = error.to_string();
    assert!(
        message.contains("3D000") && message.contains("does not exist"),
        "pool error: {message}"
    );
    assert!(!message.contains("db error"), "pool error: {message}");
}

#[tokio::test]
async fn a_statement_error_names_the_server_message_and_sqlstate() {
    let db = DbConfig::parse(&format!("{}/postgres", pg_base())).unwrap();
    let client = db.connect().await.unwrap();
    let error = DbError::from(client.simple_query("SELECT nope").await.unwrap_err());
    let message = error.to_string();
    assert!(message.contains("42703"), "statement error: {message}");
}
