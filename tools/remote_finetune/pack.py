"""Pack a run dir for the trip back (the device returns at most 8 files of <= 16 MiB): NAME.tar holds the best
(dev-scored) weights as fp16 with every json file, NAME-last.safetensors the raw final weights as fp16."""
import io
import sys
import tarfile
from pathlib import Path

from safetensors.torch import load_file, save, save_file


def fp16(path: Path) -> dict:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(path)).items()}


src, out, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
out.mkdir(parents=True, exist_ok=True)
with tarfile.open(out / f"{name}.tar", "w") as tar:
    members = [(p.name, p.read_bytes()) for p in sorted(src.glob("*.json"))]
    if (src / "model.safetensors").is_file():
        members.append(("model.safetensors", save(fp16(src / "model.safetensors"))))
    for arc, data in members:
        info = tarfile.TarInfo(f"{name}/{arc}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
if (src / "last.safetensors").is_file():
    save_file(fp16(src / "last.safetensors"), str(out / f"{name}-last.safetensors"))
print("packed", name, [m for m in tarfile.open(out / f"{name}.tar").getnames()])
