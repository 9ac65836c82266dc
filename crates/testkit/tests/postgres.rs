//! The PostgreSQL harness: it serves SQL to the superuser and to roles signing in with a
//! password, refuses a wrong password, and keeps its data across a stop and a restart on the
//! same port.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use testkit::TestPostgres;

#[test]
fn serves_signs_in_roles_and_keeps_data_across_a_restart() {
    let mut pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    assert!(pg.is_running());
    assert_eq!(pg.psql("select 1").unwrap(), "1");
    assert_eq!(
        pg.psql_url(&pg.url(), "select current_user").unwrap(),
        "postgres"
    );

    // One `-c` is one transaction, which CREATE DATABASE refuses to run in.
    pg.psql("create role writer login password 'w''s secret: @/'")
        .unwrap();
    pg.psql("create database trades owner writer").unwrap();
    let writer = pg.url_as("writer", "w's secret: @/", "trades");
    assert_eq!(
        pg.psql_url(&writer, "select current_user || ' ' || current_database()")
            .unwrap(),
        "writer trades"
    );
    pg.psql_url(
        &writer,
        "create table kept (id int primary key, note text); insert into kept values (1, 'before')",
    )
    .unwrap();

    let refused = pg
        .psql_url(&pg.url_as("writer", "wrong", "trades"), "select 1")
        .unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    pg.stop().unwrap();
    assert!(!pg.is_running());
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], pg.port()));
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "port {} still accepts connections after stop",
        pg.port()
    );
    assert!(pg.psql("select 1").is_err());

    pg.restart().unwrap();
    assert!(pg.is_running());
    assert_eq!(
        pg.psql_url(&writer, "select id, note from kept").unwrap(),
        "1|before"
    );
    assert!(
        pg.log_tail(60)
            .contains("database system is ready to accept connections")
    );
}

#[test]
fn a_failed_statement_is_an_error_with_the_server_message() {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let error = pg.psql("select * from missing_table").unwrap_err();
    assert!(
        error.contains("relation \"missing_table\" does not exist"),
        "{error}"
    );
}
