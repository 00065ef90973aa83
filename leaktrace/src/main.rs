use std::process::ExitCode;

use clap::Parser as _;
use leaktrace::{cli::Cli, failure::Failure, runtime, target};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == target::GATE_ARG) {
        return exit(target::gate_main(&args[2..]));
    }
    let cli = Cli::parse();
    // One thread: the event loop is sequential by design, and fewer threads to exclude.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leaktrace: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(runtime::run(cli)) {
        Ok(code) => exit(code),
        Err(err) => {
            let code = err.downcast_ref::<Failure>().map_or(1, Failure::exit_code);
            eprintln!("leaktrace: error: {err:#}");
            exit(code)
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
