//! app-raw: Deribit trades into the raw Kafka topic.
//!
//! Shell: the service is wired by the services issue, once the Deribit and Kafka adapters exist.

fn main() -> std::process::ExitCode {
    eprintln!("app-raw is not wired yet: see the README's roadmap");
    std::process::ExitCode::FAILURE
}
