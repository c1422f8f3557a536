//! `arbor-keeper`: holds one container's main process so that it outlives
//! the agent (live restore); see `arbor::keeper`.

fn main() -> std::process::ExitCode {
    arbor::keeper::main(std::env::args_os().skip(1))
}
