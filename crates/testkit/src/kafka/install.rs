//! Where the Apache Kafka broker comes from: the jars `just kafka` fetches with Maven (the
//! version in `tools/kafka/pom.xml`), and the Java runtime that runs them.

use std::path::PathBuf;

/// The command that fetches the broker.
pub const KAFKA_FETCH: &str = "just kafka";

/// The Maven project `just kafka` resolves; its `kafka.version` is the version used everywhere.
const POM: &str = include_str!("../../../../tools/kafka/pom.xml");

/// The Apache Kafka version `tools/kafka/pom.xml` fetches (e.g. `4.1.1`).
pub fn kafka_version() -> &'static str {
    POM.split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map_or("unknown", |(version, _)| version.trim())
}

/// Where `just kafka` puts the broker's jars.
pub fn kafka_libs() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KAFKA_LIBS") {
        return Some(PathBuf::from(dir));
    }
    Some(
        crate::process::tool_cache()?
            .join(format!("kafka-{}", kafka_version()))
            .join("libs"),
    )
}

/// Whether the broker's jars are in place (`just kafka` has run).
pub fn kafka_installed() -> bool {
    kafka_libs().is_some_and(|libs| {
        libs.join(format!("kafka_2.13-{}.jar", kafka_version()))
            .is_file()
    })
}

pub(super) fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|java| java.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

pub(super) fn java_error(e: &std::io::Error) -> String {
    format!("starting java ({e}); Apache Kafka needs a Java 17+ runtime on PATH or in JAVA_HOME")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_pom() {
        assert!(kafka_version().starts_with("4."), "{}", kafka_version());
    }
}
