//! Writes the published schemas and samples from the Rust types:
//! `schemas/json/<service>/<action>.json`, `schemas/xsd/<service>.xsd` and
//! `schemas/samples/<service>/<action>.{json,xml}`. Run after changing a message type:
//! `cargo run -p snodo-schemas --example generate`.

use std::path::Path;

use snodo_schemas::Catalog;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["json", "xsd", "samples"] {
        let dir = root.join(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let files = Catalog::global().generated_files()?;
    for (path, content) in &files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    println!("wrote {} files under {}", files.len(), root.display());
    Ok(())
}
