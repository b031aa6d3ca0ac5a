//! "did you mean …?" for unknown instructions: the closest name by edit distance.

fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `options` to `word`, if close enough to be a typo.
pub fn closest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_uppercase();
    options
        .iter()
        .map(|o| (distance(&w, &o.to_ascii_uppercase()), *o))
        .filter(|(d, o)| *d <= 2.max(o.len() / 3) && *d < o.len())
        .min()
        .map(|(_, o)| o)
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests() {
        let all = ["RUN", "COPY", "ENTRYPOINT"];
        assert_eq!(super::closest("RUNN", &all), Some("RUN"));
        assert_eq!(super::closest("cpy", &all), Some("COPY"));
        assert_eq!(super::closest("ENTRYPINT", &all), Some("ENTRYPOINT"));
        assert_eq!(super::closest("XYZZYQ", &all), None);
    }
}
