"""The bottom layer: user-facing errors, the machine side of a run (device, precision, seeding), the run
directory and its metrics log, atomic checkpoints, progress display. It imports nothing else of gradwise."""
