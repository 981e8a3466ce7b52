//! The `dc-search` binary: parse, run, report one clear error.
use std::process::ExitCode;

fn main() -> ExitCode {
    match dc_search::commands::run(dc_search::cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.root_cause().is::<dc_search::runtime::Interrupted>() {
                ExitCode::from(130)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
