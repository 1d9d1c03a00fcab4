"""What executes runs: `executor` (one claimed run on a pool thread, its children, its
end) and `worker` (the claim loop: which runs this engine takes, and wake-ups).

`intemporal.Engine` is the facade over both; nothing here is public API.
"""
