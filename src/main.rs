//! The `dc-search` binary: parse, run, report one clear error line (exit 2; 130 or 143 when
//! stopped by SIGINT or SIGTERM).
use std::process::ExitCode;

fn main() -> ExitCode {
    match dc_search::commands::run(dc_search::cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => ExitCode::from(dc_search::runtime::report_error(&err)),
    }
}
