//! `tensorgate-gateway`: a cluster gateway alone, linking neither libtorch
//! nor wasmtime (`tensorgate-host gateway` is the same command in the full
//! binary).

use clap::Parser;
use tensorgate_gateway::command::GatewayCommand;

/// Serve the tensorgate client protocol and forward items to the cluster's workers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    gateway: GatewayCommand,
}

fn main() -> anyhow::Result<()> {
    tensorgate_server::init_tracing();
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(args.gateway.run())?;
    Ok(())
}
