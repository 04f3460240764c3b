"""`benchmarks/real_size.py --tiny`: the real-size run's whole path (write checkpoints in the real formats, serve them
on a loopback mirror, `weights download` through HF_ENDPOINT / DALLE_FLOW_WEIGHTS_MIRROR, the Flow with the real
preset, one request per endpoint, the table) with tiny configs, so the script cannot rot between real runs."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_real_size_script_in_tiny_mode(tmp_path):
    scratch = tmp_path / "scratch"
    result = subprocess.run([sys.executable, "benchmarks/real_size.py", "--tiny", "--scratch", str(scratch)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "downloaded through the mirror" in out and out.count("downloaded (checked against") >= 30
    rows = [line for line in out.splitlines() if line.startswith("| dalle ")]
    assert {row.split("|")[2].strip() for row in rows} == {"dalle", "rerank", "upscaler", "clipseg"}
    assert all("GiB" in row for row in rows)
    assert not scratch.exists()  # cleaned up
