//! Stamps the git commit into the build (`meridian_build_info{commit}`), so
//! the binary never needs git at run time. `MERIDIAN_GIT_COMMIT` set at
//! build time wins (a container build without `.git`); without either the
//! commit is `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MERIDIAN_GIT_COMMIT");
    let from_env = std::env::var("MERIDIAN_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = from_env.or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Rebuild when HEAD moves: a checkout (HEAD), a commit on the branch
    // checked out (its ref file alone: another worktree's commits must not
    // rebuild this one), or a `git pack-refs`.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let Some(dir) = git(&["rev-parse", "--git-common-dir"]) {
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{branch}");
        }
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    println!(
        "cargo:rustc-env=MERIDIAN_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown").trim()
    );
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    if text.is_empty() {
        None
    } else {
        Some(text.to_owned())
    }
}
