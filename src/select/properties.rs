//! Property tests of the pure selection.
