//! `meshctl topics create|check`: the three meshwatch topics. Production
//! clusters often forbid auto-creation, so setup creates them explicitly.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::CliError;
use crate::kafka::{self, TopicSpec};

#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub action: TopicsAction,
    /// Kafka bootstrap servers.
    #[arg(long = "kafka", env = "MESHWATCH_KAFKA", default_value = super::DEFAULT_KAFKA, global = true)]
    pub bootstrap: String,
    /// The log topic.
    #[arg(long, env = "MESHWATCH_LOGS_TOPIC", default_value = kafka::LOGS_TOPIC, global = true)]
    pub logs_topic: String,
    /// The heartbeat topic.
    #[arg(long, env = "MESHWATCH_HEARTBEATS_TOPIC", default_value = kafka::HEARTBEATS_TOPIC, global = true)]
    pub heartbeats_topic: String,
    /// The alert topic.
    #[arg(long, env = "MESHWATCH_ALERTS_TOPIC", default_value = kafka::ALERTS_TOPIC, global = true)]
    pub alerts_topic: String,
}

#[derive(Subcommand, Debug)]
pub enum TopicsAction {
    /// Create the topics (existing ones are left as they are).
    Create {
        /// Partitions of the log topic (the others get fewer).
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Replication factor (1 for a single broker).
        #[arg(long, default_value_t = 1)]
        replication: i32,
        /// How long the log topic keeps records.
        #[arg(long, value_parser = super::parse_duration, default_value = "168h")]
        retention: Duration,
    },
    /// Exit 1 and name the topics that are missing.
    Check,
}

pub(crate) async fn run(args: TopicsArgs, json: bool) -> Result<ExitCode, CliError> {
    let names = [&args.logs_topic, &args.heartbeats_topic, &args.alerts_topic];
    match args.action {
        TopicsAction::Create {
            partitions,
            replication,
            retention,
        } => {
            if partitions < 1 || replication < 1 {
                return Err(CliError::Flag {
                    flag: "partitions",
                    reason: "partitions and replication must be at least 1".into(),
                });
            }
            let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            let specs = [
                TopicSpec {
                    name: args.logs_topic.clone(),
                    partitions,
                    retention_ms: Some(retention_ms),
                },
                // Heartbeats are only interesting while fresh.
                TopicSpec {
                    name: args.heartbeats_topic.clone(),
                    partitions: partitions.min(3),
                    retention_ms: Some(6 * 3600 * 1000),
                },
                TopicSpec {
                    name: args.alerts_topic.clone(),
                    partitions: 1,
                    retention_ms: Some(retention_ms.saturating_mul(4)),
                },
            ];
            kafka::create_topics_replicated(&args.bootstrap, &specs, replication).await?;
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
                    args.bootstrap,
                    names.map(String::as_str).join(", ")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsAction::Check => {
            let wanted = names.map(String::as_str);
            let missing =
                kafka::missing_topics(&args.bootstrap, &wanted, Duration::from_secs(10)).await?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::json!({ "missing": missing }))?;
            } else if missing.is_empty() {
                writeln!(out, "all topics present on {}", args.bootstrap)?;
            } else {
                writeln!(out, "missing on {}: {}", args.bootstrap, missing.join(", "))?;
            }
            Ok(if missing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
