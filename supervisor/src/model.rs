//! Default model management (written by the model helper).
