//! What the supervisor keeps on disk for the user: the conversation (`session`, the
//! transcript) and what happened (`journal`, the event journal). Both live in the state dir,
//! are written so that a crash or a full disk never leaves a torn line behind, and know
//! nothing of the loop that fills them.

pub mod journal;
pub mod session;
