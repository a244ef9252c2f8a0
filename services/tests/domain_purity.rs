//! The domain/adapter rule, held by a test: domain modules never name tonic,
//! prost or generated proto types. Every source file under `src/` is domain
//! unless it is one of the adapters listed here, so a new file starts out
//! held to the rule.

use std::path::{Path, PathBuf};

/// Files allowed to speak gRPC: adapters, wiring, binaries.
const ADAPTERS: &[&str] = &[
    "app.rs",
    "config.rs",
    "edge.rs",
    "faults.rs",
    "lib.rs",
    "bin/order.rs",
    "bin/inventory.rs",
    "bin/payment.rs",
    "order/grpc.rs",
    "order/clients.rs",
    "inventory/grpc.rs",
    "payment/grpc.rs",
];

const FORBIDDEN: &[&str] = &["tonic", "prost", "meshwatch_proto", "pb::"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn domain_modules_never_name_grpc_types() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut domain = Vec::new();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if ADAPTERS.contains(&rel.as_str()) || rel.ends_with("mod.rs") {
            continue;
        }
        domain.push(rel.clone());
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN {
                if code.contains(word) {
                    violations.push(format!(
                        "src/{rel}:{}: names {word:?}: {}",
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    for must in [
        "money.rs",
        "deadline.rs",
        "db.rs",
        "limits.rs",
        "ids.rs",
        "order/book.rs",
        "order/saga.rs",
        "order/ports.rs",
        "inventory/store.rs",
        "payment/ledger.rs",
    ] {
        assert!(
            domain.iter().any(|d| d == must),
            "{must} must be checked as a domain module (found {domain:?})"
        );
    }
    assert!(
        violations.is_empty(),
        "domain modules must convert at the edge, not speak gRPC:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_rule_catches_a_violation() {
    // The scanner itself: a line naming tonic outside a comment is caught,
    // a comment is not.
    let flagged = |line: &str| {
        let code = line.split("//").next().unwrap_or_default();
        FORBIDDEN.iter().any(|w| code.contains(w))
    };
    assert!(flagged("use tonic::Status;"));
    assert!(flagged("fn f(x: pb::Order) {}"));
    assert!(!flagged("// converted at the tonic edge"));
}
