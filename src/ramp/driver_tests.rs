//! Driver tests (paused tokio time).
