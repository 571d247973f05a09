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
from ide3d_core.operations import limits


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="export a textured, labelled head mesh (.glb/.obj/.ply)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", type=int, help="random seed of the head")
    src.add_argument("--portrait", type=Path, help="a .ide3d portrait document (its current edit state)")
    p.add_argument("--out", type=Path, required=True, help="output file: .glb, .obj or .ply")
    p.add_argument("--model", default="", help="model folder (config.json + generator.safetensors), or "
                   "config:NAME for an untrained generator of a preset; default: the bundled model")
    p.add_argument("--resolution", type=int, default=256,
                   help="density grid samples per axis ({}..{}; {}..{} recommended)".format(
                       *limits.MESH_RESOLUTION, *limits.MESH_RESOLUTION_RECOMMENDED))
    p.add_argument("--texture", type=int, default=2048,
                   help="texture size in texels (1024..4096; 0 = vertex colours, no texture)")
    p.add_argument("--parts", action="store_true", help="one mesh and material per semantic class (.glb)")
    p.add_argument("--faces", type=int, default=50000, help="target triangle count (0 = no decimation)")
    p.add_argument("--level", type=float, default=None, help="surface density level (default: the model's calibrated level, "
                   "mesh_level.json beside its weights, else 10)")
    p.add_argument("--smooth", type=int, default=0, help="Taubin smoothing iterations (default 0)")
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation psi for --seed (default: the model's, 1 for the bundled model)")
    p.add_argument("--no-photo-projection", action="store_true",
                   help="bake a portrait's texture from the generator's renders alone, without its photos")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _field(args: argparse.Namespace, device):
    """(field, photo projection or None, portrait state or None) of the command's head."""
    from ide3d_core.operations.mesh import portrait_field, seed_field

    base = load_base(args.model, device)
    if args.seed is not None:
        truncation = base.default_truncation if args.truncation is None else args.truncation
        return seed_field(base, args.seed, truncation), None, None
    from ide3d_core.photo_projection import portrait_projection
    from ide3d_core.portrait import PortraitError, load_portrait

    try:
        portrait = load_portrait(args.portrait)
        g = portrait.generator(base)
    except PortraitError as exc:
        raise UserError(str(exc)) from None
    projection = None if args.no_photo_projection or not args.texture else portrait_projection(g, portrait)
    return portrait_field(g, portrait.state), projection, portrait.state


def run(args: argparse.Namespace) -> int:
    from ide3d_core.operations import OperationError
    from ide3d_core.operations.mesh import MeshOptions, build_mesh, check_output, resolve_level, write_mesh
    from ide3d_core.progress import TqdmProgress

    try:
        options = MeshOptions(resolution=args.resolution, texture=args.texture, faces=args.faces,
                              smooth=args.smooth, level=args.level)
        check_output(args.out, options, args.parts)
        if args.portrait is not None and not args.portrait.is_file():
            raise UserError(f"no portrait file {args.portrait}")
        device = device_arg(args.device)
        field, projection, state = _field(args, device)
        with TqdmProgress("mesh", disable=args.quiet) as bar:
            result = build_mesh(field, options, resolve_level(options, args.model), progress=bar,
                                projection=projection, state=state)
        files = write_mesh(result.mesh, args.out, parts=args.parts)
    except OperationError as exc:
        raise UserError(str(exc)) from None
    m = result.mesh
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"{m.num_vertices} vertices, {m.num_faces} triangles ({timing})")
    for f in files:
        print(f"wrote {f}")
    return 0
