//! Device rules for cgroup v2 as a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
//!
//! The OCI rules are first reduced the way the v1 devices controller would apply
//! them in order (a full wildcard rule resets to allow-all or deny-all, later rules
//! take precedence), then emitted newest first, each a block that returns on a
//! match, with the default at the end. Hand-written because no maintained crate
//! emits this one small program; the instruction encoding is the kernel's
//! `struct bpf_insn`.

use std::os::fd::AsRawFd;
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use crate::fsutil::{CgroupError, io};

/// One `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst | src << 4.
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95;

fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// A reduced rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// 0 any, 1 block, 2 char.
    typ: u32,
    major: Option<i64>,
    minor: Option<i64>,
    /// mknod 1, read 2, write 4.
    access: u32,
}

fn access_bits(a: &str) -> u32 {
    a.chars()
        .map(|c| match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        })
        .fold(0, |x, y| x | y)
}

/// Applies the rules in order; returns (default allow, rules newest first).
fn reduce(rules: &[LinuxDeviceCgroup]) -> (bool, Vec<Rule>) {
    let mut default_allow = true; // the kernel's default with no program
    let mut list: Vec<Rule> = Vec::new();
    for r in rules {
        let typ = match r.typ().map(|t| t.as_str().to_string()).as_deref() {
            Some("b") => 1,
            Some("c") => 2,
            _ => 0,
        };
        let access = access_bits(r.access().as_deref().unwrap_or("rwm"));
        if typ == 0 && r.major().is_none() && r.minor().is_none() && access == 7 {
            default_allow = r.allow();
            list.clear();
            continue;
        }
        list.push(Rule {
            allow: r.allow(),
            typ,
            major: r.major().filter(|m| *m >= 0),
            minor: r.minor().filter(|m| *m >= 0),
            access,
        });
    }
    list.reverse();
    (default_allow, list)
}

/// Compiles OCI device rules into a program.
pub fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let (default_allow, list) = reduce(rules);
    let mut p = vec![
        i(LDX_W, 2, 1, 0, 0),      // r2 = ctx->access_type
        i(AND_K, 2, 0, 0, 0xffff), // r2 = type
        i(LDX_W, 3, 1, 0, 0),      // r3 = ctx->access_type
        i(RSH_K, 3, 0, 0, 16),     // r3 = access
        i(LDX_W, 4, 1, 4, 0),      // r4 = major
        i(LDX_W, 5, 1, 8, 0),      // r5 = minor
    ];
    for r in list {
        let mut b: Vec<Insn> = Vec::new();
        // Jumps to "next block" are patched once the block length is known.
        if r.typ != 0 {
            b.push(i(JNE_K, 2, 0, 0, r.typ as i32));
        }
        if r.allow {
            if r.access != 7 {
                // Every requested bit must be allowed: (access & ~allowed) == 0.
                b.push(i(MOV_X, 1, 3, 0, 0));
                b.push(i(AND_K, 1, 0, 0, (!r.access & 7) as i32));
                b.push(i(JNE_K, 1, 0, 0, 0));
            }
        } else {
            // Any requested bit that is denied matches.
            b.push(i(MOV_X, 1, 3, 0, 0));
            b.push(i(AND_K, 1, 0, 0, r.access as i32));
            b.push(i(JEQ_K, 1, 0, 0, 0));
        }
        if let Some(m) = r.major {
            b.push(i(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            b.push(i(JNE_K, 5, 0, 0, m as i32));
        }
        b.push(i(MOV_K, 0, 0, 0, i32::from(r.allow)));
        b.push(i(EXIT, 0, 0, 0, 0));
        let n = b.len();
        for (k, ins) in b.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JEQ_K {
                ins.off = (n - k - 1) as i16;
            }
        }
        p.extend(b);
    }
    p.push(i(MOV_K, 0, 0, 0, i32::from(default_allow)));
    p.push(i(EXIT, 0, 0, 0, 0));
    p
}

fn encode(p: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() * 8);
    for ins in p {
        out.push(ins.code);
        out.push(ins.regs);
        out.extend_from_slice(&ins.off.to_le_bytes());
        out.extend_from_slice(&ins.imm.to_le_bytes());
    }
    out
}

fn bpf(cmd: i64, attr: &mut [u8]) -> std::io::Result<i32> {
    // SAFETY: attr is a zero-initialised buffer at least as large as the union
    // members the kernel reads for `cmd`; pointers inside it outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

/// Loads `prog` and attaches it to the cgroup directory `cgroup`.
pub fn attach(cgroup: &Path, prog: &[Insn]) -> Result<(), CgroupError> {
    let code = encode(prog);
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&15u32.to_le_bytes()); // BPF_PROG_TYPE_CGROUP_DEVICE
    attr[4..8].copy_from_slice(&(prog.len() as u32).to_le_bytes());
    attr[8..16].copy_from_slice(&(code.as_ptr() as u64).to_le_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_le_bytes());
    attr[24..28].copy_from_slice(&1u32.to_le_bytes()); // log_level
    attr[28..32].copy_from_slice(&(log.len() as u32).to_le_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_le_bytes());
    let prog_fd = bpf(5, &mut attr).map_err(|e| {
        let msg = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
            .into_owned();
        io(format!("load device program ({msg})"), cgroup, e)
    })?;
    // SAFETY: bpf returned a new descriptor we now own.
    let prog_fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(prog_fd) };
    let dir = std::fs::File::open(cgroup).map_err(|e| io("open", cgroup, e))?;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_le_bytes());
    attr[4..8].copy_from_slice(&(prog_fd.as_raw_fd() as u32).to_le_bytes());
    attr[8..12].copy_from_slice(&6u32.to_le_bytes()); // BPF_CGROUP_DEVICE
    attr[12..16].copy_from_slice(&2u32.to_le_bytes()); // BPF_F_ALLOW_MULTI
    bpf(8, &mut attr).map_err(|e| io("attach device program to", cgroup, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reduces_like_the_v1_controller() {
        let (d, l) = reduce(&rules(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":5,"access":"r"}]"#,
        ));
        assert!(!d);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].minor, Some(5), "newest first");
        assert_eq!(l[0].access, 2);
    }

    #[test]
    fn program_shape() {
        let p = compile(&rules(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#,
        ));
        // 6 loads, one block (type, major, minor, mov, exit), default deny.
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(p[6], i(JNE_K, 2, 0, 4, 2));
        assert_eq!(p[p.len() - 2], i(MOV_K, 0, 0, 0, 0));
        assert_eq!(encode(&p).len(), p.len() * 8);
    }

    /// The program for real, on this machine's v2 hierarchy (the unified one of the
    /// hybrid layout has no controllers, but device programs need none).
    #[test]
    fn enforced_by_the_kernel() {
        let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(Path::new)
            .find(|p| {
                crate::mountinfo::read()
                    .unwrap()
                    .iter()
                    .any(|m| Path::new(&m.mount_point) == *p && m.fstype == "cgroup2")
            })
            .expect("a cgroup2 hierarchy is mounted");
        let dir = unified.join(format!("berth-ebpf-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        struct Rm(std::path::PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        let prog = compile(&rules(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}]"#,
        ));
        attach(&dir, &prog).unwrap();
        let try_open = |path: &'static std::ffi::CStr| -> i32 {
            let mut fds = [0i32; 2];
            // SAFETY: plain pipe/fork/read/open/_exit; the child only calls
            // async-signal-safe functions.
            unsafe {
                assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
                let pid = libc::fork();
                if pid == 0 {
                    let mut b = [0u8; 1];
                    libc::read(fds[0], b.as_mut_ptr().cast(), 1);
                    let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                    libc::_exit(if fd >= 0 {
                        0
                    } else {
                        *libc::__errno_location()
                    });
                }
                std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
                libc::write(fds[1], b"x".as_ptr().cast(), 1);
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
                libc::close(fds[0]);
                libc::close(fds[1]);
                libc::WEXITSTATUS(st)
            }
        };
        assert_eq!(try_open(c"/dev/null"), 0, "allowed device opens");
        assert_eq!(
            try_open(c"/dev/zero"),
            libc::EPERM,
            "other devices are refused"
        );
    }
}
