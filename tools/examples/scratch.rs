use std::time::Instant;
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let wasm = std::fs::read(&p).unwrap();
    let t = Instant::now();
    let r = ssi_remote::instrument::instrument_runnable(&wasm).unwrap();
    println!("instrument_runnable {:.2}s size {} MB", t.elapsed().as_secs_f64(), r.len() / 1000000);
    if std::env::args().nth(2).is_some() {
        let runtime = ssi_remote::Runtime::new(None).unwrap();
        let t = Instant::now();
        ssi_remote::Module::new(runtime.engine(), &r).unwrap();
        println!("compile runnable {:.2}s", t.elapsed().as_secs_f64());
    }
}
