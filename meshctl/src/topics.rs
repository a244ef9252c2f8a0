//! `meshctl topics create|check`: the three meshwatch topics. Production
//! clusters often forbid auto-creation, so setup creates them explicitly.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::CliError;
use meshwatch_entry::{KafkaArgs, TopicArgs};
use meshwatch_kafka::{self as kafka, TopicSpec};

#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub action: TopicsAction,
}

/// Where the topics are and what they are called.
#[derive(Args, Debug, Clone)]
pub struct TopicsTarget {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
}

#[derive(Subcommand, Debug)]
pub enum TopicsAction {
    /// Create the topics (existing ones are left as they are), each with
    /// max.message.bytes=1048576 and compression.type=lz4: the size and codec
    /// contract with the shipper.
    Create {
        #[command(flatten)]
        target: TopicsTarget,
        /// Partitions of the log topic (the others get fewer).
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Replication factor (1 for a single broker).
        #[arg(long, default_value_t = 1)]
        replication: i32,
        /// How long the log topic keeps records.
        #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "168h", value_name = "DURATION")]
        retention: Duration,
    },
    /// Exit 1 and name the topics that are missing.
    Check {
        #[command(flatten)]
        target: TopicsTarget,
    },
}

pub(crate) async fn run(args: TopicsArgs, json: bool) -> Result<ExitCode, CliError> {
    match args.action {
        TopicsAction::Create {
            target,
            partitions,
            replication,
            retention,
        } => {
            let names = target.names();
            if partitions < 1 || replication < 1 {
                return Err(CliError::Flag {
                    flag: "partitions",
                    reason: "partitions and replication must be at least 1".into(),
                });
            }
            let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            // Every topic gets the size and codec contract with the shipper
            // (max.message.bytes, compression.type) explicitly, not the
            // broker's defaults.
            let specs = [
                TopicSpec {
                    retention_ms: Some(retention_ms),
                    ..TopicSpec::new(target.topics.logs_topic.clone(), partitions)
                }
                .with_meshwatch_limits(),
                // Heartbeats are only interesting while fresh.
                TopicSpec {
                    retention_ms: Some(6 * 3600 * 1000),
                    ..TopicSpec::new(target.topics.heartbeats_topic.clone(), partitions.min(3))
                }
                .with_meshwatch_limits(),
                TopicSpec {
                    retention_ms: Some(retention_ms.saturating_mul(4)),
                    ..TopicSpec::new(target.topics.alerts_topic.clone(), 1)
                }
                .with_meshwatch_limits(),
            ];
            kafka::create_topics_replicated(&target.kafka, &specs, replication).await?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "created_or_present": names })
                )?;
            } else {
                writeln!(
                    out,
                    "topics ready on {}: {}",
                    target.kafka.bootstrap,
                    names.map(String::as_str).join(", ")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsAction::Check { target } => {
            let names = target.names();
            let wanted = names.map(String::as_str);
            let missing =
                kafka::missing_topics(&target.kafka, &wanted, Duration::from_secs(10)).await?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::json!({ "missing": missing }))?;
            } else if missing.is_empty() {
                writeln!(out, "all topics present on {}", target.kafka.bootstrap)?;
            } else {
                writeln!(
                    out,
                    "missing on {}: {}",
                    target.kafka.bootstrap,
                    missing.join(", ")
                )?;
            }
            Ok(if missing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

impl TopicsTarget {
    fn names(&self) -> [&String; 3] {
        [
            &self.topics.logs_topic,
            &self.topics.heartbeats_topic,
            &self.topics.alerts_topic,
        ]
    }
}
