//! The image config's `User` (and `run --user`, `COPY --chown`) resolved
//! against the image's /etc/passwd and /etc/group: `name`, `uid`,
//! `name:group`, `uid:gid`, plus the user's home directory and supplementary
//! groups, as runc's GetExecUser does, with docker's errors for names that do
//! not exist. Shared by the engine (containers) and the builder (RUN steps).

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership).
    pub additional_gids: Vec<u32>,
    /// Home directory.
    pub home: String,
}

fn entries(data: Option<&[u8]>) -> Vec<Vec<String>> {
    data.map(|d| {
        String::from_utf8_lossy(d)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()
    })
    .unwrap_or_default()
}

/// Resolves `spec` (empty means root) with the image's passwd and group files.
pub fn resolve(spec: &str, passwd: Option<&[u8]>, group: Option<&[u8]>) -> Result<User, String> {
    let pw = entries(passwd);
    let gr = entries(group);
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let pw_entry = pw
        .iter()
        .find(|e| e.len() >= 4 && (e[0] == u || (u.parse::<u32>().is_ok() && e[2] == u)));
    let uid = match (u.parse::<u32>(), pw_entry) {
        (Ok(n), _) => n,
        (Err(_), Some(e)) => e[2].parse().unwrap_or(0),
        (Err(_), None) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ));
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
        None => pw_entry.and_then(|e| e[3].parse().ok()).unwrap_or(0),
    };
    let name = pw_entry.map(|e| e[0].clone());
    let mut additional: Vec<u32> = match (&name, g) {
        (Some(n), None) => gr
            .iter()
            .filter(|e| e.len() >= 4 && e[3].split(',').any(|m| m == n))
            .filter_map(|e| e[2].parse().ok())
            .collect(),
        _ => Vec::new(),
    };
    // The primary group is listed too, as docker (runc's GetExecUser) lists it.
    additional.push(gid);
    additional.sort();
    additional.dedup();
    let home = pw_entry
        .and_then(|e| e.get(5).cloned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| if uid == 0 { "/root".into() } else { "/".into() });
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n";
    const GR: &[u8] = b"root:x:0:\nwww-data:x:33:\nstaff:x:50:bob,alice\nbob:x:1000:\n";

    #[test]
    fn forms() {
        let r = |s| resolve(s, Some(PW), Some(GR)).unwrap();
        assert_eq!(
            r(""),
            User {
                uid: 0,
                gid: 0,
                additional_gids: vec![0],
                home: "/root".into()
            }
        );
        assert_eq!(
            r("bob"),
            User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![50, 1000],
                home: "/home/bob".into()
            }
        );
        assert_eq!(r("33").home, "/var/www");
        assert_eq!((r("bob:staff").uid, r("bob:staff").gid), (1000, 50));
        assert_eq!((r("4242:4343").uid, r("4242:4343").gid), (4242, 4343));
        assert_eq!(r("4242").home, "/");
        assert!(
            resolve("nobody-here", Some(PW), Some(GR))
                .unwrap_err()
                .contains("unable to find user nobody-here")
        );
        assert!(resolve("bob:nogroup", Some(PW), Some(GR)).is_err());
    }
}
