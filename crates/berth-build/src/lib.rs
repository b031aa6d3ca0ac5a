//! berth's builder. So far: [`dispatch`], the instructions that change only the
//! image config (CMD, ENTRYPOINT, ENV, …), shared by `build` and by
//! `import --change` / `commit --change`.
#![deny(missing_docs)]

pub mod dispatch;
