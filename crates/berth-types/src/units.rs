//! docker's size units (`RAMInBytes` of go-units): what `--memory`,
//! `--shm-size` and `runc update --memory` accept.

/// `64m`, `1g`, `512k`, `1024`, `2GB`, `1.5g` as bytes (binary multiples).
/// A value that does not fit an `i64` is refused (Go's docker wraps it to
/// a negative number and writes a bogus cgroup limit).
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|x| x.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size: '{s}'"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= i64::MAX as f64 {
        return Err(format!("invalid size: '{s}': out of range"));
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::ram_in_bytes;

    #[test]
    fn docker_units() {
        assert_eq!(ram_in_bytes("64m"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("1g"), Ok(1 << 30));
        assert_eq!(ram_in_bytes("2GB"), Ok(2 << 30));
        assert_eq!(ram_in_bytes("512k"), Ok(512 << 10));
        assert_eq!(ram_in_bytes("1024"), Ok(1024));
        assert_eq!(ram_in_bytes("1.5k"), Ok(1536));
        assert!(ram_in_bytes("lots").is_err());
        assert!(ram_in_bytes("99999999999999999999").is_err());
        assert!(ram_in_bytes("-1m").is_err());
    }
}
