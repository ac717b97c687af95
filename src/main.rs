fn main() -> std::process::ExitCode {
    testbot::cmd::main()
}
