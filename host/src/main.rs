//! The `bgagents` command.

fn main() -> std::process::ExitCode {
    bgagents::cli_main()
}
