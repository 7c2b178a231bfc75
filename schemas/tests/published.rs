//! The checked-in schemas and samples under `schemas/json`, `schemas/xsd` and `schemas/samples`
//! are the ones the types generate, and no other file lingers there.

use std::path::{Path, PathBuf};

use snodo_schemas::Catalog;

const REGENERATE: &str =
    "regenerate with `cargo run -p snodo-schemas --example generate` and commit";

fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn checked_in_schemas_are_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let expected = Catalog::global().generated_files().unwrap();
    let mut stale = Vec::new();
    for (path, content) in &expected {
        match std::fs::read_to_string(root.join(path)) {
            Ok(on_disk) if on_disk == *content => {}
            Ok(_) => stale.push(format!("schemas/{path} differs from the types")),
            Err(_) => stale.push(format!("schemas/{path} is missing")),
        }
    }
    let mut present = Vec::new();
    for dir in ["json", "xsd", "samples"] {
        files_under(&root.join(dir), &root, &mut present);
    }
    for path in present {
        if !expected.iter().any(|(p, _)| *p == path) {
            stale.push(format!("schemas/{path} belongs to no message"));
        }
    }
    assert!(stale.is_empty(), "{}\n{REGENERATE}", stale.join("\n"));
}

#[test]
fn the_samples_are_valid_in_both_forms_and_say_the_same() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let catalog = Catalog::global();
    for message in catalog.messages() {
        let stem = root.join(format!(
            "samples/{}/{}",
            message.service(),
            message.action()
        ));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(stem.with_extension("json")).unwrap())
                .unwrap();
        let xml = std::fs::read_to_string(stem.with_extension("xml")).unwrap();
        message.validate_json(&json).unwrap();
        message.validate_xml(&xml).unwrap();
        assert_eq!(
            message.xml_to_json(&xml).unwrap(),
            json,
            "{}",
            message.name()
        );
    }
}
