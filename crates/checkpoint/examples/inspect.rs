//! `cargo run -p checkpoint --example inspect -- FILE [--json]`: what `cargo xtask checkpoint
//! inspect` prints, for any supported file.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: inspect FILE [--json]");
        std::process::exit(2);
    };
    match checkpoint::inspect(std::path::Path::new(file)) {
        Ok(s) if args.iter().any(|a| a == "--json") => match serde_json::to_string_pretty(&s) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        },
        Ok(s) => print!("{s}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
