//! Fetches the corpus (`ssi_tests::corpus`) and prints each program's name,
//! language and module path, one per line, tab-separated: what benchmarks
//! that run the corpus start from.

fn main() -> std::process::ExitCode {
    match ssi_tests::corpus::fetch_all() {
        Ok(programs) => {
            for (p, module) in programs {
                println!("{}\t{}\t{}", p.name, p.language, module.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ssi-corpus: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
