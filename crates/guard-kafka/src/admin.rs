//! Topic administration: create the topics the guard writes (events, profiles, releases) and
//! the ones the tools and tests use. An existing topic is fine.

use crate::KafkaGuardError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::ClientConfig;

/// Create `topics` with the admin client configuration `admin`; per topic, `Ok(true)` when
/// created, `Ok(false)` when it already existed, or the broker's error.
pub async fn create_topics(
    admin: &ClientConfig,
    topics: &[NewTopic<'_>],
) -> Result<Vec<(String, Result<bool, String>)>, KafkaGuardError> {
    let admin: AdminClient<_> = admin.create()?;
    let results = admin.create_topics(topics, &AdminOptions::new()).await?;
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(t) => (t, Ok(true)),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => (t, Ok(false)),
            Err((t, e)) => (t, Err(e.to_string())),
        })
        .collect())
}

/// Create one topic with a client configuration (brokers, TLS, SASL); an existing one is fine.
pub async fn create_topic_with(admin: &ClientConfig, topic: &str, partitions: i32) -> Result<(), KafkaGuardError> {
    let new = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    for (t, r) in create_topics(admin, &new).await? {
        r.map_err(|e| KafkaGuardError::Topic(format!("creating topic {t}: {e}")))?;
    }
    Ok(())
}
