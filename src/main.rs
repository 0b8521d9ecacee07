//! The `delaystore` command: an operator's and load-tester's front end to a store directory.
//! Machine output is JSON lines on stdout; progress and logs go to stderr.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
