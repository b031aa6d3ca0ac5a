//! Seccomp filters as classic BPF, laid out as a balanced binary search over
//! syscall numbers.
//!
//! Written by hand because the crates do not do this well: seccompiler emits
//! one linear chain (Docker's default profile: 1,542 instructions), which the
//! kernel must emulate for every syscall number when it builds its per-filter
//! action cache at install (1.1 ms of every container start, measured), and
//! which every conditional syscall walks at run time; libseccomp optimises
//! into a tree but is C. Here a syscall is found in ~7 comparisons, and
//! runs of consecutive numbers allowed alike are one leaf (Docker's profile:
//! 222 instructions where one leaf per number made 1,534).
//!
//! Layout: check the architecture (anything else is killed, as libseccomp's
//! "bad arch" action does), load the number, descend the tree (each inner
//! node is `jge mid` + a long `ja` to the right half, so no conditional jump
//! ever needs more than its 8 bits), and at a leaf either return the match
//! action (for a single number or a run of them) or test the argument
//! conditions: condition sets are ORed, the
//! conditions in a set ANDed, 64-bit values compared unsigned as two 32-bit
//! halves (little-endian `seccomp_data`).

use std::collections::BTreeMap;

use libc::sock_filter;

/// A compiled program.
pub type Program = Vec<sock_filter>;

/// What a rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `(arg & mask) == value`
    MaskedEq(u64),
}

/// One argument condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0..=5.
    pub index: u8,
    /// The comparison.
    pub op: Op,
    /// The value compared with.
    pub value: u64,
}

/// Per syscall number, the condition sets that match it (an empty set
/// matches unconditionally).
pub type Rules = BTreeMap<u32, Vec<Vec<Cond>>>;

/// Seccomp return values.
pub mod ret {
    /// Let the syscall run.
    pub const ALLOW: u32 = 0x7fff_0000;
    /// Kill the whole process.
    pub const KILL_PROCESS: u32 = 0x8000_0000;
    /// Kill the thread.
    pub const KILL_THREAD: u32 = 0;
    /// SIGSYS.
    pub const TRAP: u32 = 0x0003_0000;
    /// Log and allow.
    pub const LOG: u32 = 0x7ffc_0000;
    /// Ask the agent holding the listener descriptor (SECCOMP_RET_USER_NOTIF).
    pub const USER_NOTIF: u32 = 0x7fc0_0000;
    /// Fail with an errno.
    pub fn errno(e: u32) -> u32 {
        0x0005_0000 | (e & 0xffff)
    }
    /// Notify a tracer.
    pub fn trace(data: u32) -> u32 {
        0x7ff0_0000 | (data & 0xffff)
    }
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// The kernel's limit on a filter's length.
const MAX_INSNS: usize = 4096;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A conditional jump whose false branch goes to a label resolved later.
const FAIL: u8 = u8::MAX;

/// Compiles `rules` for the audit architecture `arch`: syscalls that match
/// get `matched`, others `mismatched`.
pub fn compile(rules: &Rules, matched: u32, mismatched: u32, arch: u32) -> Result<Program, String> {
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, arch, 1, 0),
        stmt(RET_K, ret::KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
    ];
    let items = items(rules);
    if items.is_empty() {
        p.push(stmt(RET_K, mismatched));
    } else {
        tree(&mut p, &items, matched, mismatched)?;
    }
    if p.len() > MAX_INSNS {
        return Err(format!(
            "the filter needs {} instructions, more than the kernel's {MAX_INSNS}",
            p.len()
        ));
    }
    Ok(p)
}

/// What the search finds: a run of consecutive numbers that match
/// unconditionally (Docker's profile: ~350 syscalls, a few dozen runs), or
/// one number with argument conditions.
enum Item<'a> {
    Run(u32, u32),
    One(u32, &'a [Vec<Cond>]),
}

impl Item<'_> {
    fn first(&self) -> u32 {
        match self {
            Item::Run(lo, _) | Item::One(lo, _) => *lo,
        }
    }
}

/// `rules` as search items, in order: a run per stretch of consecutive
/// unconditional numbers, so the program (which the kernel copies, checks,
/// translates and compiles at every start) is a fraction of one leaf per
/// number.
fn items(rules: &Rules) -> Vec<Item<'_>> {
    let mut out: Vec<Item> = Vec::new();
    for (nr, sets) in rules {
        if !sets.iter().any(Vec::is_empty) {
            out.push(Item::One(*nr, sets));
            continue;
        }
        match out.last_mut() {
            Some(Item::Run(_, hi)) if *hi + 1 == *nr => *hi = *nr,
            _ => out.push(Item::Run(*nr, *nr)),
        }
    }
    out
}

/// Emits the search over `items` (sorted, disjoint, non-empty); the number
/// is in A.
fn tree(p: &mut Program, items: &[Item], matched: u32, mismatched: u32) -> Result<(), String> {
    if let [item] = items {
        match *item {
            Item::Run(lo, hi) if lo == hi => {
                p.push(jump(JEQ_K, lo, 1, 0));
                p.push(stmt(RET_K, mismatched));
                p.push(stmt(RET_K, matched));
            }
            Item::Run(lo, hi) => {
                // lo <= A <= hi: matched; else mismatched.
                p.push(jump(JGE_K, lo, 0, 2));
                p.push(jump(JGT_K, hi, 1, 0));
                p.push(stmt(RET_K, matched));
                p.push(stmt(RET_K, mismatched));
            }
            Item::One(nr, sets) => {
                // Equal: skip the mismatch return into this syscall's code.
                p.push(jump(JEQ_K, nr, 1, 0));
                p.push(stmt(RET_K, mismatched));
                leaf(p, sets, matched, mismatched)?;
            }
        }
        return Ok(());
    }
    let mid = items.len() / 2;
    // A >= the right half's first number: take the `ja` to it; else skip it.
    p.push(jump(JGE_K, items[mid].first(), 0, 1));
    let ja = p.len();
    p.push(stmt(JA, 0));
    tree(p, &items[..mid], matched, mismatched)?;
    p[ja].k = (p.len() - ja - 1) as u32;
    tree(p, &items[mid..], matched, mismatched)
}

/// A syscall's code: its condition sets, then the mismatch action. Leaves A
/// clobbered, which is fine: every path ends in a return.
fn leaf(p: &mut Program, sets: &[Vec<Cond>], matched: u32, mismatched: u32) -> Result<(), String> {
    if sets.iter().any(Vec::is_empty) {
        p.push(stmt(RET_K, matched));
        return Ok(());
    }
    for set in sets {
        let start = p.len();
        for c in set {
            cond(p, c);
        }
        p.push(stmt(RET_K, matched));
        // Every FAIL jumps past the `ret` just pushed: to the next set.
        let end = p.len();
        for (i, insn) in p[start..end].iter_mut().enumerate() {
            if insn.jf == FAIL || insn.jt == FAIL {
                let off = u8::try_from(end - (start + i) - 1).map_err(|_| {
                    format!("a condition set of {} conditions is too long", set.len())
                })?;
                if insn.jf == FAIL {
                    insn.jf = off;
                }
                if insn.jt == FAIL {
                    insn.jt = off;
                }
            }
        }
    }
    p.push(stmt(RET_K, mismatched));
    Ok(())
}

/// One condition: falls through when it holds, jumps to FAIL when not.
fn cond(p: &mut Program, c: &Cond) {
    let lo_off = OFF_ARGS + 8 * u32::from(c.index);
    let hi_off = lo_off + 4;
    let (hv, lv) = ((c.value >> 32) as u32, c.value as u32);
    match c.op {
        Op::Eq => {
            p.push(stmt(LD_W_ABS, hi_off));
            p.push(jump(JEQ_K, hv, 0, FAIL));
            p.push(stmt(LD_W_ABS, lo_off));
            p.push(jump(JEQ_K, lv, 0, FAIL));
        }
        Op::MaskedEq(mask) => {
            p.push(stmt(LD_W_ABS, hi_off));
            p.push(stmt(ALU_AND_K, (mask >> 32) as u32));
            p.push(jump(JEQ_K, hv, 0, FAIL));
            p.push(stmt(LD_W_ABS, lo_off));
            p.push(stmt(ALU_AND_K, mask as u32));
            p.push(jump(JEQ_K, lv, 0, FAIL));
        }
        Op::Ne => {
            // Holds when either half differs.
            p.push(stmt(LD_W_ABS, hi_off));
            p.push(jump(JEQ_K, hv, 0, 2));
            p.push(stmt(LD_W_ABS, lo_off));
            p.push(jump(JEQ_K, lv, FAIL, 0));
        }
        Op::Gt | Op::Ge => {
            // hi > hv holds; hi < hv fails; equal highs compare the lows.
            p.push(stmt(LD_W_ABS, hi_off));
            p.push(jump(JGT_K, hv, 3, 0));
            p.push(jump(JEQ_K, hv, 0, FAIL));
            p.push(stmt(LD_W_ABS, lo_off));
            let code = if c.op == Op::Gt { JGT_K } else { JGE_K };
            p.push(jump(code, lv, 0, FAIL));
        }
        Op::Lt | Op::Le => {
            // hi < hv holds; hi > hv fails; equal highs compare the lows.
            p.push(stmt(LD_W_ABS, hi_off));
            p.push(jump(JGE_K, hv, 0, 3));
            p.push(jump(JEQ_K, hv, 0, FAIL));
            p.push(stmt(LD_W_ABS, lo_off));
            let code = if c.op == Op::Lt { JGE_K } else { JGT_K };
            p.push(jump(code, lv, FAIL, 0));
        }
    }
}

/// Runs `p` on a `seccomp_data`, as the kernel would (for
/// [`super::Filters::verdict`]).
pub fn emulate(p: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let word =
        |off: u32| u32::from_le_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        // The kernel refuses such programs at load: a verdict that kills.
        let Some(&i) = p.get(pc) else {
            return ret::KILL_PROCESS;
        };
        pc += 1;
        match i.code {
            LD_W_ABS => a = word(i.k),
            ALU_AND_K => a &= i.k,
            JA => pc += i.k as usize,
            JEQ_K | JGT_K | JGE_K => {
                let t = match i.code {
                    JEQ_K => a == i.k,
                    JGT_K => a > i.k,
                    _ => a >= i.k,
                };
                pc += usize::from(if t { i.jt } else { i.jf });
            }
            RET_K => return i.k,
            _ => return ret::KILL_PROCESS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xc000_003e;

    #[test]
    fn finds_every_number_and_only_those() {
        let mut rules = Rules::new();
        for nr in (0..450).step_by(3) {
            rules.insert(nr, vec![vec![]]);
        }
        let p = compile(&rules, ret::ALLOW, ret::errno(1), ARCH).unwrap();
        for nr in 0..460 {
            let want = if nr % 3 == 0 && nr < 450 {
                ret::ALLOW
            } else {
                ret::errno(1)
            };
            assert_eq!(emulate(&p, ARCH, nr, [0; 6]), want, "nr {nr}");
        }
        assert_eq!(
            emulate(&p, 0x4000_0003, 0, [0; 6]),
            ret::KILL_PROCESS,
            "other arch"
        );
    }

    /// Runs of consecutive numbers, single numbers and numbers with
    /// conditions side by side: every number gets exactly its verdict.
    #[test]
    fn runs_of_numbers_match_exactly_their_numbers() {
        let mut rules = Rules::new();
        let cond = vec![vec![Cond {
            index: 0,
            op: Op::Eq,
            value: 4,
        }]];
        for nr in (0..40).chain(41..42).chain(44..100).chain(200..201) {
            rules.insert(nr, vec![vec![]]);
        }
        rules.insert(40, cond.clone());
        rules.insert(100, cond.clone());
        rules.insert(150, cond);
        let p = compile(&rules, ret::ALLOW, ret::errno(1), ARCH).unwrap();
        for nr in 0..300 {
            for a0 in [0, 4] {
                let want = match nr {
                    40 | 100 | 150 => a0 == 4,
                    _ => rules.contains_key(&nr),
                };
                let got = emulate(&p, ARCH, nr, [a0, 0, 0, 0, 0, 0]) == ret::ALLOW;
                assert_eq!(got, want, "nr {nr} arg {a0}");
            }
        }
        // One leaf per number would take ~800.
        assert!(p.len() < 60, "{} instructions", p.len());
    }

    #[test]
    fn compares_64_bit_arguments_unsigned() {
        let values = [
            0u64,
            1,
            5,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0005,
            u64::MAX,
        ];
        let ops = [
            Op::Eq,
            Op::Ne,
            Op::Lt,
            Op::Le,
            Op::Gt,
            Op::Ge,
            Op::MaskedEq(0xff_0000_00ff),
        ];
        for op in ops {
            for v in values {
                let mut rules = Rules::new();
                rules.insert(
                    7,
                    vec![vec![Cond {
                        index: 2,
                        op,
                        value: v,
                    }]],
                );
                let p = compile(&rules, ret::ALLOW, ret::errno(1), ARCH).unwrap();
                for a in values.iter().chain(&[0x00aa_0000_00bb, 0x5_0000_0000]) {
                    let want = match op {
                        Op::Eq => *a == v,
                        Op::Ne => *a != v,
                        Op::Lt => *a < v,
                        Op::Le => *a <= v,
                        Op::Gt => *a > v,
                        Op::Ge => *a >= v,
                        Op::MaskedEq(m) => *a & m == v,
                    };
                    let got = emulate(&p, ARCH, 7, [0, 0, *a, 0, 0, 0]) == ret::ALLOW;
                    assert_eq!(got, want, "{a:#x} {op:?} {v:#x}");
                }
            }
        }
    }

    #[test]
    fn sets_are_ored_and_conditions_anded() {
        let c = |index, value| Cond {
            index,
            op: Op::Eq,
            value,
        };
        let mut rules = Rules::new();
        rules.insert(1, vec![vec![c(0, 1), c(1, 2)], vec![c(0, 9)]]);
        let p = compile(&rules, ret::ALLOW, ret::errno(1), ARCH).unwrap();
        let run = |a0, a1| emulate(&p, ARCH, 1, [a0, a1, 0, 0, 0, 0]) == ret::ALLOW;
        assert!(run(1, 2) && run(9, 0) && run(9, 7));
        assert!(!run(1, 3) && !run(2, 2) && !run(0, 0));
    }
}
