"""Review metrics: outcome records, their day counters, and the review they add up to (docs/review.md)."""
