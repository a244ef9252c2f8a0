//! `meshctl probe ADDR`: one `grpc.health.v1.Health/Check` against a server,
//! exit 0 only when it answers SERVING (or, with `--alive`, answers at all).
//! What container health checks run (the runtime image has no grpcurl).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::CliError;
use meshwatch_proto::health::v1 as hpb;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The server's gRPC address, e.g. 127.0.0.1:50051 or http://order:50051.
    pub addr: String,
    /// Service name to check ("" = the whole server).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Succeed on any answer, SERVING or not: the server is up. For the
    /// monitor, whose "" status is the whole mesh's, not its own.
    #[arg(long)]
    pub alive: bool,
    /// Give up after this long.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "3s", value_name = "DURATION")]
    pub timeout: Duration,
}

async fn check(args: &ProbeArgs) -> Result<Result<i32, tonic::Status>, CliError> {
    let channel = crate::connect("server", &args.addr).await?;
    let answer = hpb::health_client::HealthClient::new(channel)
        .check(hpb::HealthCheckRequest {
            service: args.service.clone(),
        })
        .await;
    Ok(answer.map(|r| r.into_inner().status))
}

pub(crate) async fn run(args: ProbeArgs) -> Result<ExitCode, CliError> {
    let answer = tokio::time::timeout(args.timeout, check(&args))
        .await
        .map_err(|_| CliError::Connect {
            what: "server",
            addr: args.addr.clone(),
            reason: format!("no answer within {:?}", args.timeout),
        })??;
    let status = match answer {
        Ok(status) => status,
        // NOT_FOUND (a name it does not know) is still an answer.
        Err(s) if args.alive && s.code() == tonic::Code::NotFound => {
            println!("ALIVE");
            return Ok(ExitCode::SUCCESS);
        }
        Err(s) => return Err(CliError::rpc("health check", &s)),
    };
    let name = hpb::health_check_response::ServingStatus::try_from(status)
        .map_or_else(|_| status.to_string(), |s| s.as_str_name().to_owned());
    if args.alive {
        println!("ALIVE ({name})");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{name}");
    if status == hpb::health_check_response::ServingStatus::Serving as i32 {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
