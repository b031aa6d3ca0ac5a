//! The Dockerfile language as Docker's frontend reads it, in three layers that
//! know nothing of building: [`parser`] (syntax tree with line ranges, parser
//! directives, continuations, heredocs), [`instructions`] (one typed enum, stages,
//! flags, errors with `file:line`) and [`shell`] (word expansion).
#![deny(missing_docs)]

pub mod instructions;
pub mod parser;
pub mod shell;
