//! The `Test` builder and helpers shared by every integration test.
