//! "Did you mean" suggestions for misspelt names.

/// The candidate closest to `input` by edit distance (ignoring ASCII case),
/// if it is close enough to be a plausible typo.
pub fn closest<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let input_lower = input.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let d = distance(&input_lower, &candidate.to_ascii_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    // Allow about one edit in three characters, and at least two edits.
    let limit = (input.chars().count() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        let zones = ["Europe/London", "Europe/Dublin", "America/New_York"];
        assert_eq!(
            closest("Europe/Londn", zones.iter().copied()),
            Some("Europe/London")
        );
        assert_eq!(
            closest("america/new_york", zones.iter().copied()),
            Some("America/New_York")
        );
        assert_eq!(closest("Mars/Olympus", zones.iter().copied()), None);
    }
}
