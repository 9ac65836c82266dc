//! The configuration reference in `docs/configuration.md` is app-sql's settings as declared:
//! a setting added, renamed or given another default without its line fails here.

use app_sql::config::SqlVariables;

#[test]
fn the_docs_list_every_setting_as_declared() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let docs = std::fs::read_to_string(path).unwrap_or_default();
    let table = shell::settings::reference(SqlVariables::DECLARED);
    assert!(
        docs.contains(&table),
        "docs/configuration.md lacks app-sql's reference as declared; the section should read:\n{table}"
    );
}
