//! Image files → RGB pixels with size limits.
