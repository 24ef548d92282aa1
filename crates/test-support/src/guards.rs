//! Source guards: checks over a crate's own `src/` that keep a rule of the
//! code map true (ARCHITECTURE.md names each rule and where it holds).

use std::path::Path;

/// Every line of `src` (recursively) outside `src/error.rs` that builds a
/// gRPC status (`Status::<constructor>(`), as `path:line: text`. The
/// ticket's status enum (`v1::Status::…`) is not a gRPC status.
pub fn statuses_built_outside_error_rs(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    scan(src, &mut found);
    found
}

fn scan(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("src/error.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let scrubbed = line.replace("v1::Status::", "v1::TicketEnum::");
            let mut rest = scrubbed.as_str();
            while let Some(at) = rest.find("Status::") {
                rest = &rest[at + "Status::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let constructs = name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name != "from"
                    && rest[name.len()..].starts_with('(');
                if constructs {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
}
