//! The `bgagents` command.

fn main() -> std::process::ExitCode {
    bgagents::frontends::cli::main()
}
