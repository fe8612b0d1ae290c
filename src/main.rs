fn main() {
    std::process::exit(recordfs::cli::main());
}
