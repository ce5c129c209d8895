use cascade::cli::Cli;
use clap::Parser;

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let cli = Cli::parse();
    cascade::telemetry::init(cli.log_format);
    cli.run().await
}
