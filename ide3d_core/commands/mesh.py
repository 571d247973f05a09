# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d mesh``: a head mesh for game engines (.glb / .obj / .ply) from a seed or a portrait.

    ide3d mesh (--seed N | --portrait P.ide3d) [--resolution 256] [--texture 2048] [--parts]
               [--faces 50000] [--model PATH] --out head.glb

The density grid is sampled from the cached tri-planes (the backbone runs once), marching cubes runs at
``--level``, floaters are dropped, the mesh is decimated to ``--faces`` triangles, every vertex gets the
semantic label and colour of the field, and with ``--texture N`` (0 = vertex colours only) a UV texture
is baked from super-resolved renders of several cameras. See docs/mesh.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ide3d_core.cli import UserError
from ide3d_core.commands.model_args import device_arg, load_base


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="export a textured, labelled head mesh (.glb/.obj/.ply)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", type=int, help="random seed of the head")
    src.add_argument("--portrait", type=Path, help="a .ide3d portrait document (its current edit state)")
    p.add_argument("--out", type=Path, required=True, help="output file: .glb, .obj or .ply")
    p.add_argument("--model", default="", help="model folder (config.json + generator.safetensors), or "
                   "config:NAME for an untrained generator of a preset; default: the bundled model")
    p.add_argument("--resolution", type=int, default=256, help="density grid samples per axis (128..512)")
    p.add_argument("--texture", type=int, default=2048,
                   help="texture size in texels (1024..4096; 0 = vertex colours, no texture)")
    p.add_argument("--parts", action="store_true", help="one mesh and material per semantic class (.glb)")
    p.add_argument("--faces", type=int, default=50000, help="target triangle count (0 = no decimation)")
    p.add_argument("--level", type=float, default=None, help="surface density level (default: the model's calibrated level, "
                   "mesh_level.json beside its weights, else 10)")
    p.add_argument("--smooth", type=int, default=0, help="Taubin smoothing iterations (default 0)")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi for --seed (default 0.7)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _field(args: argparse.Namespace, device):
    from ide3d_core.mesh.generator_field import GeneratorField

    base = load_base(args.model, device)
    if args.seed is not None:
        return GeneratorField(base, base.codes_from_seeds([args.seed], truncation_psi=args.truncation))
    from ide3d_core.portrait import PortraitError, load_portrait

    try:
        portrait = load_portrait(args.portrait)
        g = portrait.generator(base)
    except PortraitError as exc:
        raise UserError(str(exc)) from None
    state = portrait.state
    restyle = state.restyle
    return GeneratorField(g.eval().requires_grad_(False), state.ws,
                          None if restyle is None else restyle.style_ws,
                          () if restyle is None else restyle.classes)


def _level(args: argparse.Namespace) -> float:
    """--level, else the model's calibrated surface level (a portrait's model is its --model base)."""
    from ide3d_core.model_loading import ModelError, surface_level

    if args.level is not None:
        if not args.level > 0:
            raise UserError(f"--level must be positive, got {args.level}")
        return float(args.level)
    try:
        return surface_level(args.model)
    except ModelError as exc:
        raise UserError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from ide3d_core.mesh.bake import BakeConfig
    from ide3d_core.mesh.cleanup import CleanupConfig
    from ide3d_core.mesh.export import export_mesh
    from ide3d_core.mesh.generator_field import GeneratorRenderer
    from ide3d_core.mesh.grid import GridConfig
    from ide3d_core.mesh.pipeline import MeshConfig, extract_head_mesh
    from ide3d_core.progress import TqdmProgress

    if args.out.suffix.lower() not in (".glb", ".obj", ".ply"):
        raise UserError(f"--out must end in .glb, .obj or .ply, got {args.out.name!r}")
    if not 16 <= args.resolution <= 1024:
        raise UserError(f"--resolution must be in 16..1024 (128..512 recommended), got {args.resolution}")
    if args.texture and not 64 <= args.texture <= 8192:
        raise UserError(f"--texture must be 0 or in 64..8192 (1024..4096 recommended), got {args.texture}")
    if args.texture and args.out.suffix.lower() == ".ply":
        raise UserError("PLY files carry vertex colours only: pass --texture 0 or write .glb/.obj")
    if args.parts and args.out.suffix.lower() != ".glb":
        raise UserError("--parts needs a .glb output")
    if args.faces and args.faces < 100:
        raise UserError(f"--faces must be 0 (no decimation) or at least 100, got {args.faces}")
    if args.portrait is not None and not args.portrait.is_file():
        raise UserError(f"no portrait file {args.portrait}")
    device = device_arg(args.device)

    field = _field(args, device)
    config = MeshConfig(grid=GridConfig(resolution=args.resolution),
                        level=_level(args),
                        cleanup=CleanupConfig(smooth_iterations=args.smooth, target_faces=args.faces),
                        bake=BakeConfig(texture_size=args.texture) if args.texture else None)
    with TqdmProgress("mesh", disable=args.quiet) as bar:
        try:
            result = extract_head_mesh(field, config, GeneratorRenderer(field), progress=bar)
        except ValueError as exc:
            if "not crossed" in str(exc):
                raise UserError(f"{exc}; pick --level inside that range") from None
            raise
    files = export_mesh(result.mesh, args.out, parts=args.parts)
    m = result.mesh
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"{m.num_vertices} vertices, {m.num_faces} triangles ({timing})")
    for f in files:
        print(f"wrote {f}")
    return 0
