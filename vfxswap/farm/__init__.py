"""Farm jobs: Open Job Description bundles of chunked, retry-safe renders."""
