//! Which Kafka errors are weather and which need a person.
//!
//! A broker that is down, restarting or moving a partition's leader is weather: the clients
//! reconnect by themselves, so the services wait and retry. A refused configuration, failed
//! credentials or a missing permission never heal by waiting: those stop the service with the
//! broker's reason.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Whether `error` will not go away by retrying (configuration, credentials, permissions).
pub fn needs_operator(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(code_needs_operator)
}

/// As [`needs_operator`], for a bare error code.
pub fn code_needs_operator(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::InvalidSessionTimeout
            | C::InvalidGroupId
            | C::GroupAuthorizationFailed
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::SecurityDisabled
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
            | C::InvalidConfig
            | C::InvalidArgument
            | C::Fatal
    )
}

/// Whether `code` says another producer with our transactional id took over.
pub fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_weather_and_refusals_are_not() {
        let consumption = |code| KafkaError::MessageConsumption(code);
        assert!(!needs_operator(&consumption(
            RDKafkaErrorCode::AllBrokersDown
        )));
        assert!(!needs_operator(&consumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!needs_operator(&consumption(
            RDKafkaErrorCode::NotLeaderForPartition
        )));
        assert!(needs_operator(&consumption(
            RDKafkaErrorCode::InvalidSessionTimeout
        )));
        assert!(needs_operator(&consumption(
            RDKafkaErrorCode::SaslAuthenticationFailed
        )));
        assert!(needs_operator(&consumption(
            RDKafkaErrorCode::Authentication
        )));
    }
}
