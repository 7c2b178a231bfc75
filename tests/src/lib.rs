//! Helpers shared by the workspace-level end-to-end tests.
