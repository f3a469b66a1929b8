//! Prints its arguments and its environment (sorted), then exits with the status
//! given as `--exit N`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        println!("arg[{i}] = {a:?}");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in &vars {
        println!("env {k}={v:?}");
    }
    if let Some(pos) = args.iter().position(|a| a == "--exit") {
        let code = args.get(pos + 1).and_then(|c| c.parse().ok()).unwrap_or(2);
        std::process::exit(code);
    }
}
