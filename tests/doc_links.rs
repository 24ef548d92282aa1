//! Every relative link in the project's markdown resolves: README.md,
//! ARCHITECTURE.md, BENCHMARKS.md, k8s/README.md and docs/*.md. A link to a
//! file must name one that exists; a `#fragment` into a markdown file must
//! name one of its headings (GitHub's anchor rule). ARCHITECTURE.md is a map
//! whose details live in docs/, so a moved or renamed page must not leave a
//! dead link behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The markdown files whose links are checked.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    let mut files: Vec<PathBuf> = [
        "README.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "k8s/README.md",
    ]
    .iter()
    .map(|f| root.join(f))
    .filter(|p| p.exists())
    .collect();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Link destinations of one markdown text, with the line each starts on.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (event, range) in Parser::new_ext(text, Options::all()).into_offset_iter() {
        if let Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) = event {
            let line = text[..range.start].lines().count().max(1);
            out.push((line, dest_url.to_string()));
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens, `-1`, `-2`, … for repeats.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(text, Options::all()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let title = heading.take().unwrap_or_default();
                let slug: String = title
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect();
                let n = seen.entry(slug.clone()).or_insert(0);
                out.push(if *n == 0 {
                    slug.clone()
                } else {
                    format!("{slug}-{n}")
                });
                *n += 1;
            }
            _ => {}
        }
    }
    out
}

fn is_external(dest: &str) -> bool {
    dest.contains("://") || dest.starts_with("mailto:")
}

/// Every broken link of `files`, as `FILE:LINE: message`.
fn broken_links(files: &[PathBuf]) -> Vec<String> {
    let mut texts: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut read = |path: &Path| -> Option<String> {
        let key = path.canonicalize().ok()?;
        if !texts.contains_key(&key) {
            texts.insert(key.clone(), std::fs::read_to_string(&key).ok()?);
        }
        texts.get(&key).cloned()
    };
    let mut problems = Vec::new();
    for file in files {
        let text = read(file).unwrap_or_else(|| panic!("cannot read {}", file.display()));
        let shown = file
            .strip_prefix(ROOT)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, dest) in links(&text) {
            if is_external(&dest) {
                continue;
            }
            let (path_part, fragment) = match dest.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (dest.as_str(), None),
            };
            let target = if path_part.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path_part)
            };
            if !target.exists() {
                problems.push(format!("{shown}:{line}: `{dest}`: no such file"));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if target.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let target_text = read(&target).unwrap_or_default();
            if !anchors(&target_text).iter().any(|a| a == fragment) {
                problems.push(format!("{shown}:{line}: `{dest}`: no heading #{fragment}"));
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let files = documents();
    assert!(files.len() > 10, "found only {files:?}");
    let problems = broken_links(&files);
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_dead_link_and_a_dead_anchor_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(
        &page,
        "# Page\n\n## Two words\n\n[ok](#two-words) [self](page.md#page)\n\
         [gone](missing.md) [bad](#nowhere) `[code](missing.md)` [web](https://example.com/x)\n",
    )
    .unwrap();
    let problems = broken_links(std::slice::from_ref(&page));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].ends_with("`missing.md`: no such file"),
        "{problems:?}"
    );
    assert!(
        problems[1].ends_with("`#nowhere`: no heading #nowhere"),
        "{problems:?}"
    );
}

#[test]
fn anchors_follow_githubs_rule() {
    assert_eq!(
        anchors(
            "# Invariants and where each is enforced\n## `meridian trace`, and more!\n## A\n## A\n"
        ),
        [
            "invariants-and-where-each-is-enforced",
            "meridian-trace-and-more",
            "a",
            "a-1"
        ]
    );
}
