"""``python -m hal_sim.hall --out DIR ...``: write a simulated hall clip (hal_sim/hall/clip_writer.py)."""

from hal_sim.hall.clip_writer import main

raise SystemExit(main())
