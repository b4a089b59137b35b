"""The design example's workload: lists its inputs and writes a report to its granted output folder."""
import os
import pathlib

inputs = pathlib.Path("/data/inputs")
outputs = pathlib.Path("/data/outputs")
names = sorted(p.name for p in inputs.iterdir()) if inputs.is_dir() else []
outputs.mkdir(parents=True, exist_ok=True)
(outputs / "report.txt").write_text(f"{len(names)} input file(s): {', '.join(names)}\n")
print(f"[{os.environ.get('LOG_LEVEL', 'info')}] wrote /data/outputs/report.txt")
