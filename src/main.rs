use clap::Parser;

fn main() -> std::process::ExitCode {
    // Rust ignores SIGPIPE, so `riskid … | head` would panic on a closed pipe; restore the
    // default so a client command simply stops, as command-line tools do.
    #[cfg(unix)]
    // SAFETY: runs first, before any other thread exists; it only resets a signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = riskid::cli::Cli::parse();
    riskid::cli::init_tracing(&cli.log_format, cli.command.default_log_level());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(riskid::cli::run(cli)) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", riskid::client::safe(&format!("{e:#}")));
            std::process::ExitCode::from(riskid::cli::exit::of(&e) as u8)
        }
    }
}
