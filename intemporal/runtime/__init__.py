"""The parts `intemporal.Engine` is made of, one module per role: `lifecycle` (options,
what an engine holds, closing), `starting` (start and resume), `executor` (one claimed run
on a pool thread, its children, its end), `worker` (the claim loop: which runs this engine
takes, and wake-ups), `control` (cancel, terminate, signal, fork), `queues` (this
engine's side of queue limits) and `aio` (async runs on an event loop).

`engine.py` is the facade over them; nothing here is public API.
"""
