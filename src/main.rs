use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = riskid::cli::Cli::parse();
    riskid::cli::init_tracing(&cli.log_format);
    match riskid::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
