//! What the gRPC adapters share at the edge between proto and domain: money
//! and timestamps in their proto form, and the caller's deadline read from
//! the request metadata.

use std::time::{Duration, SystemTime};

use meshwatch_proto::common::v1 as pb;

use crate::db::DbError;
use crate::deadline::Deadline;
use crate::money::{Money, MoneyError};

/// Metadata key payment sets on the FAILED_PRECONDITION answering a charge
/// of an order that was refunded, so order can tell it from other refusals.
pub const REFUNDED_METADATA: &str = "meshwatch-payment-refunded";

/// A database failure as a caller sees it: UNAVAILABLE (retry later) while
/// the database does not answer, INTERNAL otherwise; the message names the
/// database.
pub fn db_status(e: &DbError) -> tonic::Status {
    match e {
        DbError::Unavailable { .. } => tonic::Status::unavailable(e.to_string()),
        DbError::Query { .. } | DbError::Corrupt { .. } => tonic::Status::internal(e.to_string()),
    }
}

/// `SystemTime` as a protobuf timestamp.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A proto amount as domain money; a missing one is an error.
pub fn money(value: Option<pb::Money>) -> Result<Money, MoneyError> {
    let value = value.ok_or(MoneyError::Missing)?;
    Money::new(&value.currency_code, value.amount_minor)
}

/// Domain money in its proto form.
pub fn money_proto(m: &Money) -> pb::Money {
    pb::Money {
        currency_code: m.currency().to_owned(),
        amount_minor: m.minor(),
    }
}

/// The deadline of the request with `metadata`: its `grpc-timeout`, capped at `max`.
pub fn deadline(metadata: &tonic::metadata::MetadataMap, max: Duration) -> Deadline {
    Deadline::from_grpc_timeout(
        metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()),
        max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_and_missing_is_an_error() {
        let m = Money::new("USD", 1850).unwrap();
        assert_eq!(money(Some(money_proto(&m))).unwrap(), m);
        assert_eq!(money(None), Err(MoneyError::Missing));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_reads_grpc_timeout() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("grpc-timeout", "200m".parse().unwrap());
        assert_eq!(
            deadline(&md, Duration::from_secs(10)).remaining(),
            Duration::from_millis(200)
        );
    }
}
