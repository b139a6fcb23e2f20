fn main() {
    std::process::exit(crashrig::cli::main());
}
