use std::process::ExitCode;

use clap::Parser as _;
use leaktrace::{cli::Cli, failure::Failure, floor, runtime, target};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == target::GATE_ARG) {
        return exit(target::gate_main(&args[2..]));
    }
    if args.get(1).is_some_and(|a| a == floor::FLOOR_ARG) {
        return finish(floor::main(&args[2..]));
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
    finish(rt.block_on(runtime::run(cli)))
}

fn finish(result: anyhow::Result<i32>) -> ExitCode {
    match result {
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
